"""The import layers (tools/check_layers.py): kept by the repository, and caught when broken."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def layers():
    spec = importlib.util.spec_from_file_location("check_layers", ROOT / "tools" / "check_layers.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["check_layers"] = module
    spec.loader.exec_module(module)
    yield module
    del sys.modules["check_layers"]


def test_the_repository_keeps_its_import_layers(layers):
    assert layers.violations() == []


def _tree(tmp_path: Path, files: dict[str, str]) -> dict[str, Path]:
    for rel, text in files.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return {"safeliquid": tmp_path / "safeliquid", "safeliquid.envs": tmp_path / "envs",
            "safeliquid.policies": tmp_path / "policies"}  # fmt: skip


BASE = {"safeliquid/__init__.py": "", "safeliquid/qp/__init__.py": "", "safeliquid/safety/__init__.py": "",
        "envs/__init__.py": "", "policies/__init__.py": ""}  # fmt: skip


@pytest.mark.parametrize(
    ("rel", "text", "found"),
    [
        ("safeliquid/qp/solver.py", "from safeliquid.policies import Policy\n", "a layer above it"),
        (
            "safeliquid/safety/layer.py",
            "def f():\n    from safeliquid.envs import make_env\n",
            "function-local import",
        ),
        ("policies/net.py", "import safeliquid.envs.navigate\n", "imports its sibling safeliquid.envs"),
        ("envs/robot.py", "from safeliquid import policies\n", "imports its sibling safeliquid.policies"),
        ("safeliquid/checkpoint.py", "from safeliquid.train import imitation\n", "a layer above it"),
        ("safeliquid/qp/solver.py", "from ..safety import layer\n", "a layer above it"),  # relative
    ],
)
def test_a_wrong_import_is_caught(layers, tmp_path, monkeypatch, rel, text, found):
    monkeypatch.setattr(layers, "FOLDERS", _tree(tmp_path, {**BASE, rel: text}))
    monkeypatch.setattr(layers, "ROOT", tmp_path)
    out = layers.violations()
    assert len(out) >= 1 and found in out[0], out


def test_allowed_imports_pass(layers, tmp_path, monkeypatch):
    files = {
        **BASE,
        "envs/robot.py": "from safeliquid.safety import ConstraintSet\nfrom safeliquid.envs import _sim\n",
        "safeliquid/safety/layer.py": "from typing import TYPE_CHECKING\nfrom safeliquid.qp import solve_qp\n"
        "if TYPE_CHECKING:\n    from safeliquid.envs import robot\n",
        "safeliquid/__init__.py": "def load():\n    from safeliquid.policies import load_policy\n",
    }
    monkeypatch.setattr(layers, "FOLDERS", _tree(tmp_path, files))
    monkeypatch.setattr(layers, "ROOT", tmp_path)
    assert layers.violations() == []
