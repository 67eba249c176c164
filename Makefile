# The README's two commands: `make demo` and `make test`. Each creates .venv and installs what it needs.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
# The CPU wheel of torch; a bare `torch` requirement would pull a multi-GB CUDA build.
TORCH  := torch==2.13.0

.PHONY: demo test lint docs bench clean clean-kernels

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e ".[test,docs,study]"
	$(PY) -m pip install -q --no-deps qpth==0.0.18
	$(PY) -c "import safeliquid.qp as qp; print(f'QP kernel compiled in {qp.warmup():.1f} s (cached for every later run)')"
	$(PY) -c "from safeliquid.envs.warmup import warmup; print(f'environment kernels compiled in {warmup():.1f} s')"
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/safeliquid demo

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) tools/check_layers.py

docs: $(VENV)/.installed
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet

test: lint docs
	$(PY) -m pytest

bench: $(VENV)/.installed
	$(PY) -m pip install -q -e ".[bench]"
	$(PY) benchmarks/bench_cells.py
	$(PY) benchmarks/bench_adjoint.py
	$(PY) benchmarks/bench_qp.py
	$(PY) benchmarks/bench_envs.py
	$(PY) benchmarks/bench_adversarial.py
	$(PY) benchmarks/bench_certified.py
	$(PY) benchmarks/bench_experts.py
	$(PY) benchmarks/bench_policy.py

clean: clean-kernels
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache site site-src

# numba keys a cached kernel on its own file only: after editing a kernel that another file's kernels call
# (envs/arm_kernel.py, called from arm_backup.py), drop every cache so nothing runs a stale callee.
clean-kernels:
	find safeliquid envs policies -name "*.nbi" -delete -o -name "*.nbc" -delete
