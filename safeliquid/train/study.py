"""The study of the claims behind liquid networks and BarrierNet: a grid of imitation runs (environment x cell x
size x safety mode x seed), each one Ray task that trains a policy and then measures it: nominal episodes,
observation noise, unseen scenes, the learned gains against the fixed-gain filter around the same network, and
sampling jitter (with each sample's elapsed time given to the cell, and, for the continuous-time cells, withheld),
its size and step latency. The results are gathered into one JSON (:func:`run_study`); the page is
:mod:`safeliquid.train.study_report`'s.

Each finished task writes ``<out>/tasks/<key>.json``; a re-run skips those, so the grid resumes where it was
stopped. Ray schedules the tasks (one CPU each): locally by default, on a cluster with ``address``.
"""

from __future__ import annotations

import csv
import json
import math
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from safeliquid.checkpoint import atomic_write_text
from safeliquid.envs import ENV_IDS, make_env
from safeliquid.machine import machine
from safeliquid.nn import CELLS
from safeliquid.options import option, validate
from safeliquid.policies import SAFETY_MODES, LiquidBarrierPolicy, load_policy
from safeliquid.train.explain import explain
from safeliquid.train.imitation import TrainConfig, train
from safeliquid.train.run_log import evaluate_policy
from safeliquid.train.run_options import HELD_OUT_SEED, policy_config

# Each environment's imitation options, the shipped recipes' (docs/training.md): CartPoleRail's LTC needs 3 ODE
# time units a step; ArmReach's network commands a residual on a P command towards the target, through the task
# prior, with learned gains for the sphere only, and drives every step of its DAgger rounds.
ENV_TRAIN: dict[str, dict[str, Any]] = {
    "safeliquid/Navigate-v0": {},
    "safeliquid/CartPoleRail-v0": {"cell_dt": 3.0},
    "safeliquid/ArmReach-v0": {
        "cell_dt": 3.0,
        "prior": "task",
        "prior_bound": 3.0,
        "task_bound": 1.0,
        "goal_gain": 10.0,
        "gain_groups": ["obstacle"],
        "dagger_beta": 0.0,
    },
}
NOISE = (0.0, 0.05, 0.1, 0.2, 0.3)  # observation-noise std of the robustness sweep
JITTER = (0.25, 0.5)  # sampling jitter: each period dt * (1 + j U(-1, 1)), the policy told each one
WITHHELD = "jitter {:g}, dt withheld"  # the largest jitter with the elapsed time withheld (continuous cells)
# Scenes unlike training's, per environment: name -> env keyword arguments.
UNSEEN: dict[str, dict[str, dict[str, Any]]] = {
    "safeliquid/Navigate-v0": {
        "more obstacles (6-9, trained 3-6)": {"n_obstacles": (6, 9)},
        "larger obstacles (radius 0.4-0.7 m, trained 0.2-0.5)": {"obstacle_radius": (0.4, 0.7)},
        "mass x1.5": {"mass_scale": 1.5},
    },
    "safeliquid/CartPoleRail-v0": {"mass x1.5": {"mass_scale": 1.5}, "mass x0.7": {"mass_scale": 0.7}},
    "safeliquid/ArmReach-v0": {"mass x1.5": {"mass_scale": 1.5}},
}
REFERENCE = ("ltc", 19)  # the 19-neuron NCP: the parameter count every cell is matched to at size "matched"


QUICK = {"seeds": 1, "cells": ["ltc", "lstm", "mlp"], "large_cells": None, "demos": 40, "dagger_rounds": 1,
         "dagger_episodes": 20, "updates": 300, "episodes": 10, "out": "runs/study_quick"}  # fmt: skip
# What every task of one grid folder must share (its results are comparable only so); the grid's lists may grow.
BUDGET = ("demos", "dagger_rounds", "dagger_episodes", "updates", "episodes", "large_units")


@dataclass
class StudyConfig:
    """The grid and its budget. Every cell runs in every mode at the size ``matched`` (its units chosen so its
    parameter count is nearest the 19-neuron LTC's); ``large_cells`` run at ``large`` too (matched to the LTC
    with ``large_units``), in barrier mode."""

    envs: list[str] = option(["safeliquid/Navigate-v0", "safeliquid/CartPoleRail-v0"], "environments")
    cells: list[str] = option(list(CELLS), "cells at the matched size")
    modes: list[str] = option(list(SAFETY_MODES), "safety modes each cell is trained and evaluated in")
    large_cells: list[str] | None = option(
        ["ltc", "lstm", "mlp"], "cells also run at the large size (barrier mode); none: no large size"
    )
    large_units: int = option(64, "the large size: the parameter count of an LTC with this many neurons", low=1)
    seeds: int = option(3, "training seeds per grid point", low=1)
    demos: int = option(100, "expert demonstrations per run", low=1)
    dagger_rounds: int = option(2, "DAgger rounds per run", low=0)
    dagger_episodes: int = option(40, "episodes per DAgger round", low=1)
    updates: int = option(1000, "gradient updates per run", low=1)
    episodes: int = option(30, "held-out episodes per measured condition", low=1)
    out: str = option("runs/study", "the grid's folder: one run folder and one result JSON per task")
    address: str | None = option(None, "a Ray cluster's address; none: a local Ray on this machine")
    cpus: int | None = option(None, "local Ray: CPUs to use (one task each); none: all", low=1)
    quick: bool = option(
        False,
        "the quick grid: one seed, three cells, fewer updates and episodes (the options "
        "it sets, unless given: " + ", ".join(sorted(QUICK)) + ")",
    )
    page: str = option("docs/results.md", "the results page to write (its plots go to results/ beside it)")
    gather: bool = option(
        False, "run no task: gather the tasks done so far into study.json and the page (a partial grid's page)"
    )

    def __post_init__(self) -> None:
        validate(self)
        for name, values, allowed in (("envs", self.envs, ENV_IDS), ("cells", self.cells, CELLS),
                                      ("large_cells", self.large_cells or [], CELLS),
                                      ("modes", self.modes, SAFETY_MODES)):  # fmt: skip
            unknown = [v for v in values if v not in allowed]
            if unknown:
                raise ValueError(f"{name}: {unknown} unknown; expected some of {list(allowed)}")


@dataclass(frozen=True)
class Task:
    """One grid point: train ``cell`` with ``units`` in ``mode`` on ``env_id`` with ``seed``."""

    env_id: str
    cell: str
    size: str
    units: int
    mode: str
    seed: int

    @property
    def key(self) -> str:
        env = self.env_id.split("/")[-1].split("-")[0].lower()
        return f"{env}-{self.cell}-{self.size}-{self.mode}-s{self.seed}"


def _policy(env_id: str, cell: str, units: int, mode: str = "barrier", seed: int = 0) -> LiquidBarrierPolicy:
    """The freshly initialised policy :func:`train` builds for ``cell`` with ``units`` on ``env_id``."""
    env = make_env(env_id)
    try:
        env.reset(seed=0)
        names = [b.name for b in env.unwrapped.constraints.barriers]
        cfg = TrainConfig(env_id=env_id, cell=cell, units=units, safety=mode, seed=seed, **ENV_TRAIN[env_id])
        return LiquidBarrierPolicy(policy_config(cfg, env, names))
    finally:
        env.close()


def trainable(policy: LiquidBarrierPolicy) -> int:
    """``policy``'s trainable parameters."""
    return sum(p.numel() for p in policy.parameters() if p.requires_grad)


def n_params(env_id: str, cell: str, units: int, mode: str = "barrier") -> int:
    """Trainable parameters of the policy :func:`train` builds for ``cell`` with ``units`` on ``env_id``."""
    return trainable(_policy(env_id, cell, units, mode))


def trajectory_length(env_id: str, cell: str, units: int, seeds: int = 5, points: int = 400) -> list[float]:
    """Raghu et al.'s trajectory length at initialisation, per seed: a circle of radius 1 in the (normalised)
    observation space, through two random orthonormal directions, fed to the network as a sequence of
    ``points`` steps; the length of its raw outputs' path over the circle's length."""
    lengths = []
    for seed in range(seeds):
        torch.manual_seed(seed)
        policy = _policy(env_id, cell, units, seed=seed)
        basis, _ = torch.linalg.qr(torch.randn(policy.config.obs_dim, 2))
        theta = torch.linspace(0.0, 2 * math.pi, points)
        circle = torch.cos(theta)[:, None] * basis[:, 0] + torch.sin(theta)[:, None] * basis[:, 1]
        with torch.no_grad():
            raw, _ = policy.raw_sequence(circle[None])
        lengths.append(float((raw[0, 1:] - raw[0, :-1]).norm(dim=-1).sum() / (2 * math.pi)))
    return lengths


def matched_units(env_id: str, cell: str, target: int, most: int = 256) -> int:
    """The units of ``cell`` whose policy's parameter count is nearest ``target`` (ties: fewer units). The
    count grows with the units, so a bisection finds the crossing."""
    lo, hi = 1, most
    while lo < hi:  # the smallest units with at least target parameters
        mid = (lo + hi) // 2
        if n_params(env_id, cell, mid) < target:
            lo = mid + 1
        else:
            hi = mid
    below = max(lo - 1, 1)
    return min((below, lo), key=lambda u: (abs(n_params(env_id, cell, u) - target), u))


def grid(cfg: StudyConfig) -> list[Task]:
    """Every task of the study, in a fixed order."""
    tasks = []
    for env_id in cfg.envs:
        sizes = {"matched": n_params(env_id, *REFERENCE)}
        if cfg.large_cells:
            sizes["large"] = n_params(env_id, "ltc", cfg.large_units)
        for size, target in sizes.items():
            cells, modes = (cfg.cells, cfg.modes) if size == "matched" else (cfg.large_cells or [], ["barrier"])
            for cell in cells:
                own = {"matched": REFERENCE[1], "large": cfg.large_units}[size] if cell == "ltc" else None
                units = own or matched_units(env_id, cell, target)
                for mode in modes:
                    tasks.extend(Task(env_id, cell, size, units, mode, seed) for seed in range(cfg.seeds))
    return tasks


def _condition(
    policy: Any, env_id: str, episodes: int, env_kwargs: dict[str, Any], timed: bool = True
) -> dict[str, Any]:
    """``episodes`` held-out episodes of ``policy`` on ``env_id`` with ``env_kwargs``: the aggregate and the
    per-episode values the report pools over seeds. ``timed``: the policy gets each sample's elapsed time."""
    m = evaluate_policy(policy, env_id, episodes, HELD_OUT_SEED, env_kwargs, per_episode=True, timed=timed)
    per = m.pop("per_episode")
    keep = ("success", "violating_steps", "ep_len", "mean_intervention", "min_barrier", "mean_step_ms",
            "path_length")  # fmt: skip
    return {
        "summary": {k: (list(v) if isinstance(v, tuple) else v) for k, v in m.items()},
        "episodes": {k: [e[k] for e in per] for k in keep},
        "dt": policy.config.dt,
    }


def run_task(task: Task, cfg: StudyConfig) -> dict[str, Any]:
    """Train ``task`` (resuming its run folder) and measure it; the result is written to
    ``<out>/tasks/<key>.json`` (and returned), or read from there if the task is done."""
    out = Path(cfg.out)
    done = out / "tasks" / f"{task.key}.json"
    if done.exists():
        return json.loads(done.read_text())
    torch.set_num_threads(1)
    run = out / "runs" / task.key
    train_cfg = TrainConfig(
        env_id=task.env_id, cell=task.cell, units=task.units, safety=task.mode, seed=task.seed,
        demos=cfg.demos, dagger_rounds=cfg.dagger_rounds, dagger_episodes=cfg.dagger_episodes,
        updates=cfg.updates, eval_every=max(cfg.updates // 3, 1), eval_episodes=10, workers=0, out=str(run),
        **ENV_TRAIN[task.env_id],
    )  # fmt: skip
    train(train_cfg, resume=True)
    with open(run / "progress.csv") as fh:  # the run's own wall time, over every resume
        train_s = float(list(csv.DictReader(fh))[-1]["wall_s"])
    t_measure = time.perf_counter()
    policy = load_policy(run / "best.pt")
    conditions: dict[str, Any] = {}
    for sigma in NOISE:
        conditions[f"noise {sigma:g}"] = _condition(policy, task.env_id, cfg.episodes, {"obs_noise": sigma})
    for j in JITTER:
        conditions[f"jitter {j:g}"] = _condition(policy, task.env_id, cfg.episodes, {"dt_jitter": j})
    if policy.cell.continuous_time:  # does the elapsed time help? the same jitter, the cell assuming dt
        worst = max(JITTER)
        conditions[WITHHELD.format(worst)] = _condition(policy, task.env_id, cfg.episodes, {"dt_jitter": worst}, False)
    for name, kwargs in UNSEEN.get(task.env_id, {}).items():
        conditions[name] = _condition(policy, task.env_id, cfg.episodes, kwargs)
    if task.mode == "barrier":  # the same network with the environment's fixed gains: the conservativeness pair
        policy.run_safety = "filter"
        conditions["fixed gains, same network"] = _condition(policy, task.env_id, cfg.episodes, {})
        policy.run_safety = "barrier"
    views = explain(policy, task.env_id, run / "explain", HELD_OUT_SEED, episodes=3)
    result = {
        "task": asdict(task),
        "key": task.key,
        "commit": commit(),  # the code this record was made with (a grid may span several sessions)
        "machine": machine(),  # and the CPU: training is deterministic on one CPU model, not across models
        "params": trainable(policy),
        "checkpoint_bytes": (run / "best.pt").stat().st_size,
        "train_s": train_s,
        "measure_s": time.perf_counter() - t_measure,
        "trees": {"median_r2": views["median_r2"], "mean_concentration": views["mean_concentration"]},
        "conditions": conditions,
    }
    done.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(done, json.dumps(result))
    return result


def command_line(cfg: StudyConfig) -> str:
    """The ``safeliquid study`` command that makes ``cfg`` (the options that differ from their defaults)."""
    parts, default = ["safeliquid study"], StudyConfig()
    if cfg.quick:
        parts.append("--quick")
    for name, value in asdict(cfg).items():
        if name in ("quick", "address", "cpus", "gather") or value == getattr(default, name):
            continue
        if cfg.quick and name in QUICK and value == QUICK[name]:
            continue
        flag = "--" + name.replace("_", "-")
        parts.append(f"{flag} {' '.join(map(str, value)) if isinstance(value, list) else value}")
    return " ".join(parts)


def commit() -> str:
    """The git commit of the working tree the study ran from ("unknown" outside a checkout; "+dirty" marks
    uncommitted changes)."""
    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, check=True)  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def check_budget(cfg: StudyConfig) -> None:
    """Write ``<out>/budget.json`` (the :data:`BUDGET` options), or refuse a grid folder made with another."""
    budget = {k: getattr(cfg, k) for k in BUDGET}
    path = Path(cfg.out) / "budget.json"
    if path.exists():
        saved = json.loads(path.read_text())
        changed = sorted(k for k in BUDGET if saved.get(k) != budget[k])
        if changed:
            raise ValueError(f"out: {cfg.out} holds a study with other {changed} ({saved}); use a new --out")
    atomic_write_text(path, json.dumps(budget))


def run_study(cfg: StudyConfig, progress: bool = True) -> dict[str, Any]:
    """Run every task of :func:`grid` not yet done on Ray (none with ``cfg.gather``), then gather all done into
    ``<out>/study.json`` (returned; the others listed in ``"missing"``). A failed task is named in ``"failed"``
    (with its error) and leaves no result: re-running retries it."""
    try:
        import ray
    except ImportError:
        raise ValueError("the study runs on Ray, which is not installed: pip install 'safeliquid[study]'") from None
    from tqdm import tqdm

    out = Path(cfg.out)
    check_budget(cfg)
    tasks = grid(cfg)
    todo = [t for t in tasks if not (out / "tasks" / f"{t.key}.json").exists()]
    failed: dict[str, str] = {}
    t0 = time.perf_counter()
    if todo and not cfg.gather:
        local = cfg.address is None
        ray.init(address=cfg.address, num_cpus=cfg.cpus if local else None, include_dashboard=False,
                 object_store_memory=200 * 2**20 if local else None, log_to_driver=False,
                 runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})  # fmt: skip
        try:
            remote = ray.remote(num_cpus=1, max_retries=0)(run_task)
            # Seed by seed: a grid stopped early holds every grid point at fewer seeds, not some at all.
            pending = {remote.remote(t, cfg): t for t in sorted(todo, key=lambda t: t.seed)}
            bar = tqdm(total=len(tasks), initial=len(tasks) - len(todo), desc="study", disable=not progress)
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                task = pending.pop(ready[0])
                try:
                    ray.get(ready[0])
                except Exception as err:
                    failed[task.key] = f"{type(err).__name__}: {str(err).splitlines()[-1] if str(err) else ''}"
                bar.update(1)
            bar.close()
        finally:
            ray.shutdown()
    results = [json.loads(p.read_text()) for t in tasks if (p := out / "tasks" / f"{t.key}.json").exists()]
    matched = {(t.env_id, t.cell): t.units for t in tasks if t.size == "matched"}
    expressivity = {f"{env}|{cell}": trajectory_length(env, cell, units) for (env, cell), units in matched.items()}
    study = {
        "config": asdict(cfg),
        "expressivity": expressivity,
        "commit": commit(),
        "tasks": results,
        "failed": failed,
        "missing": [t.key for t in tasks if not (out / "tasks" / f"{t.key}.json").exists()],
        "wall_s": time.perf_counter() - t0,
        "machine": machine(),
        "noise": list(NOISE),
        "jitter": list(JITTER),
    }
    atomic_write_text(out / "study.json", json.dumps(study))
    return study


__all__ = [
    "BUDGET", "JITTER", "NOISE", "QUICK", "WITHHELD", "StudyConfig", "Task", "check_budget", "command_line", "grid",
    "matched_units", "n_params", "run_study", "run_task", "trajectory_length",
]  # fmt: skip
