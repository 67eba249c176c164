"""Every user error gets a one-line message naming the argument: a table over the API and the command line.

Each API case calls a public function with one wrong argument and expects the exception type and a phrase
that names the argument. Each CLI case runs ``safeliquid ...`` in-process and expects exit code 2, a one-line
``error:`` on stderr that names the option, and no traceback.
"""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

import safeliquid.envs  # noqa: F401 - registers the environments
from safeliquid import cli, load_policy
from safeliquid.checkpoint import CheckpointError
from safeliquid.envs import make_env
from safeliquid.nn import make_cell
from safeliquid.policies import save_policy, shipped
from safeliquid.qp import solve_qp, solve_qp_numpy
from safeliquid.safety import (
    Barrier,
    BarrierLayer,
    ConstraintSet,
    DoubleIntegrator,
    SafetyFilter,
    SafetyFilterWrapper,
)
from safeliquid.train.imitation import TrainConfig

F64 = torch.float64
ONE = torch.ones(1, 2, dtype=F64)


@pytest.fixture(scope="module")
def scene():
    """The shipped Navigate policy, a Navigate env after reset, its state and constraints; an ArmReach set."""
    env = gym.make("safeliquid/Navigate-v0")
    obs, _ = env.reset(seed=0)
    arm = gym.make("safeliquid/ArmReach-v0")
    arm.reset(seed=0)
    policy = load_policy(shipped("safeliquid/Navigate-v0"))
    yield {
        "policy": policy, "obs": obs, "env": env, "c": env.unwrapped.constraints,
        "x": env.unwrapped.safety_state(), "arm_c": arm.unwrapped.constraints,
    }  # fmt: skip
    env.close()
    arm.close()


def _qp(**over):
    """A valid 2-variable QP's arguments (torch, batch 1) with ``over`` replacing some."""
    args = {"Q": torch.eye(2, dtype=F64)[None], "q": torch.ones(1, 2, dtype=F64),
            "G": torch.ones(1, 1, 2, dtype=F64), "h": torch.ones(1, 1, dtype=F64)}  # fmt: skip
    args.update(over)
    return args


def _act(s, **over):
    s["policy"].reset()
    kw = {"obs": s["obs"], "state": s["x"], "constraints": s["c"], **over}
    return s["policy"].act(kw["obs"], kw["state"], kw["constraints"])


def _empty_file(tmp_path: Path) -> str:
    path = tmp_path / "empty.pt"
    path.write_bytes(b"")
    return str(path)


def _garbage_file(tmp_path: Path) -> str:
    path = tmp_path / "garbage.pt"
    path.write_bytes(b"not a checkpoint at all")
    return str(path)


def _ill_typed_config(tmp_path: Path, s) -> str:
    path = tmp_path / "ill.pt"
    save_policy(s["policy"], path)
    blob = torch.load(path, weights_only=True)
    blob["config"]["units"] = "nineteen"
    torch.save(blob, path)
    return str(path)


API_CASES = [
    # (id, call(scene, tmp_path), exception, phrase naming the argument)
    ("make_cell: units 0", lambda s, t: make_cell("gru", 8, 0), ValueError, "units must be an integer >= 1"),
    (
        "Barrier: unknown class_k",
        lambda s, t: Barrier("b", lambda x: x[:, 0], class_k="quartic"),
        ValueError,
        "class_k must be one of",
    ),
    ("Barrier: h not callable", lambda s, t: Barrier("b", 1.0), TypeError, "h must be a callable"),
    ("DoubleIntegrator: dim 0", lambda s, t: DoubleIntegrator(dim=0), ValueError, "dim must be an integer >= 1"),
    ("act: NaN state", lambda s, t: _act(s, state=s["x"] * np.nan), ValueError, "state contains NaN"),
    ("act: short state", lambda s, t: _act(s, state=s["x"][:2]), ValueError, "state must have shape"),
    ("act: NaN observation", lambda s, t: _act(s, obs=s["obs"] * np.nan), ValueError, "observation contains NaN"),
    ("act: short observation", lambda s, t: _act(s, obs=s["obs"][:3]), ValueError, "observation must have"),
    ("act: another env's constraints", lambda s, t: _act(s, constraints=s["arm_c"]), ValueError, "constraints are for"),
    ("act: no state in barrier mode", lambda s, t: _act(s, state=None), ValueError, "needs state="),
    ("solve_qp: numpy arrays", lambda s, t: solve_qp(np.eye(2)[None], np.ones((1, 2))), TypeError, "Q must be a torch"),
    (
        "solve_qp: NaN in q",
        lambda s, t: solve_qp(**_qp(q=torch.full((1, 2), np.nan, dtype=F64))),
        ValueError,
        "q contains",
    ),
    (
        "solve_qp: inf in h",
        lambda s, t: solve_qp(**_qp(h=torch.full((1, 1), np.inf, dtype=F64))),
        ValueError,
        "h contains",
    ),
    (
        "solve_qp: Q not PD",
        lambda s, t: solve_qp(**_qp(Q=-torch.eye(2, dtype=F64)[None])),
        ValueError,
        "positive definite",
    ),
    (
        "solve_qp: overflowing solution",
        lambda s, t: solve_qp(**_qp(Q=1e-10 * torch.eye(2, dtype=F64)[None], q=torch.full((1, 2), 1e308, dtype=F64))),
        ValueError,
        "too large for Q's scale",
    ),
    (
        "solve_qp: reference beyond float64's resolution",
        lambda s, t: solve_qp(**_qp(q=torch.full((1, 2), 1e200, dtype=F64), lb=-ONE, ub=ONE)),
        ValueError,
        "q is ill-scaled",
    ),
    ("solve_qp: mixed dtypes", lambda s, t: solve_qp(**_qp(q=torch.ones(1, 2))), TypeError, "q torch.float32"),
    ("solve_qp: G without h", lambda s, t: solve_qp(**_qp(h=None)), ValueError, "h is required"),
    (
        "solve_qp: lb > ub",
        lambda s, t: solve_qp(**_qp(lb=torch.ones(1, 2, dtype=F64), ub=torch.zeros(1, 2, dtype=F64))),
        ValueError,
        "lb",
    ),
    ("solve_qp: bad backend", lambda s, t: solve_qp(**_qp(), backend="gurobi"), ValueError, "backend must be one of"),
    ("solve_qp: q wrong rank", lambda s, t: solve_qp(**_qp(q=torch.ones(2, dtype=F64))), ValueError, "q"),
    (
        "solve_qp_numpy: G wrong shape",
        lambda s, t: solve_qp_numpy(np.eye(2)[None], np.ones((1, 2)), np.ones((1, 1, 3)), np.ones((1, 1))),
        ValueError,
        "G must have shape",
    ),
    (
        "solve_qp_numpy: int dtype",
        lambda s, t: solve_qp_numpy(np.eye(2)[None], np.ones((1, 2), int), np.ones((1, 1, 2)), np.ones((1, 1))),
        TypeError,
        "float32 or float64",
    ),
    (
        "ConstraintSet: u_min wrong length",
        lambda s, t: ConstraintSet(s["c"].model, list(s["c"].barriers), torch.randn(8, 4, dtype=F64), u_min=[0, 0, 0]),
        ValueError,
        "u_min must have 2 entries",
    ),
    (
        "ConstraintSet: u_max not numbers",
        lambda s, t: ConstraintSet(s["c"].model, list(s["c"].barriers), torch.randn(8, 4, dtype=F64), u_max="big"),
        ValueError,
        "u_max must be 2 numbers",
    ),
    (
        "ConstraintSet: samples of the wrong width",
        lambda s, t: ConstraintSet(s["c"].model, list(s["c"].barriers), torch.randn(8, 3, dtype=F64)),
        ValueError,
        "samples must have shape",
    ),
    (
        "SafetyFilter: NaN state",
        lambda s, t: SafetyFilter(s["c"], dt=0.05).filter_numpy(s["x"] * np.nan, np.zeros(2)),
        ValueError,
        "x contains",
    ),
    (
        "SafetyFilter: short action",
        lambda s, t: SafetyFilter(s["c"], dt=0.05).filter_numpy(s["x"], np.zeros(1)),
        ValueError,
        "u_raw must have",
    ),
    (
        "SafetyFilter: action 1e12 for bounds of 5",
        lambda s, t: SafetyFilter(s["c"], dt=0.05).filter_numpy(s["x"], np.array([1e12, 0.0])),
        ValueError,
        "u_raw reaches 1e+12, beyond 1e+06 x the input bounds' scale",
    ),
    (
        "BarrierLayer: float32 reference 1e4 for bounds of 5",
        lambda s, t: BarrierLayer(s["c"])(torch.tensor(s["x"][None], dtype=torch.float32), torch.tensor([[1e4, 0.0]])),
        ValueError,
        "u_ref reaches 1e+04, beyond 100 x",
    ),
    ("SafetyFilter: negative margin", lambda s, t: SafetyFilter(s["c"], dt=0.05, margin=-1.0), ValueError, "margin"),
    ("SafetyFilter: gamma out of range", lambda s, t: SafetyFilter(s["c"], dt=0.05, gamma=2.0), ValueError, "gamma"),
    (
        "wrapper: NaN action",
        lambda s, t: _wrapped_step(np.array([np.nan, 0.0], np.float32)),
        ValueError,
        "the action contains NaN",
    ),
    ("load_policy: missing file", lambda s, t: load_policy(t / "nope.pt"), CheckpointError, "does not exist"),
    ("load_policy: empty file", lambda s, t: load_policy(_empty_file(t)), CheckpointError, "is empty"),
    ("load_policy: not a checkpoint", lambda s, t: load_policy(_garbage_file(t)), CheckpointError, "could not be read"),
    ("load_policy: ill-typed config", lambda s, t: load_policy(_ill_typed_config(t, s)), CheckpointError, "config"),
    ("make_env: unknown id", lambda s, t: make_env("safeliquid/Nope-v0"), ValueError, "unknown environment id"),
    (
        "make_env: unknown option",
        lambda s, t: make_env("safeliquid/Navigate-v0", {"obsnoise": 0.1}),
        ValueError,
        "env_kwargs ['obsnoise']",
    ),
    ("TrainConfig: units 0", lambda s, t: TrainConfig(units=0), ValueError, "units must be >= 1"),
    ("TrainConfig: lr NaN", lambda s, t: TrainConfig(lr=float("nan")), ValueError, "lr must be finite"),
    ("TrainConfig: unknown cell", lambda s, t: TrainConfig(cell="transformer"), ValueError, "cell must be one of"),
    ("TrainConfig: units a string", lambda s, t: TrainConfig(units="19"), ValueError, "units must be an integer"),
    ("TrainConfig: beta above 1", lambda s, t: TrainConfig(dagger_beta=1.5), ValueError, "dagger_beta must be <= 1"),
    ("TrainConfig: unknown env", lambda s, t: TrainConfig(env_id="CartPole-v1"), ValueError, "unknown environment"),
    ("TrainConfig: slow_weight without prior", lambda s, t: TrainConfig(slow_weight=1.0), ValueError, "slow_weight"),
]


def _wrapped_step(action: np.ndarray):
    env = SafetyFilterWrapper(gym.make("safeliquid/Navigate-v0"))
    env.reset(seed=0)
    try:
        return env.step(action)
    finally:
        env.close()


@pytest.mark.parametrize(("call", "error", "phrase"), [c[1:] for c in API_CASES], ids=[c[0] for c in API_CASES])
def test_api_errors_name_the_argument(scene, tmp_path, call, error, phrase):
    with pytest.raises(error) as info:
        call(scene, tmp_path)
    message = str(info.value)
    assert phrase in message, message
    assert "\n" not in message, message


CLI_CASES = [
    # (id, argv with {tmp} for a temporary folder, phrase naming the option)
    ("eval --seed -1", ["eval", "--seed", "-1", "--episodes", "1"], "--seed"),
    ("eval --episodes 0", ["eval", "--episodes", "0"], "--episodes"),
    ("eval --episodes x", ["eval", "--episodes", "x"], "--episodes"),
    ("eval --json under a file", ["eval", "--episodes", "1", "--json", "{file}/x.json"], "--json"),
    ("eval --markdown is a folder", ["eval", "--episodes", "1", "--markdown", "{tmp}"], "--markdown"),
    ("eval --obs-noise -1", ["eval", "--obs-noise", "-1"], "--obs-noise"),
    ("eval --disturbance nan", ["eval", "--disturbance", "nan"], "--disturbance"),
    ("eval --env unknown", ["eval", "--env", "safeliquid/Nope-v0"], "--env"),
    ("eval --policy missing", ["eval", "--policy", "{tmp}/nope.pt"], "does not exist"),
    ("eval --policy empty", ["eval", "--policy", "{empty}"], "is empty"),
    ("eval --run-safety bad", ["eval", "--run-safety", "maybe"], "--run-safety"),
    ("rollout --out under a file", ["rollout", "--out", "{file}/r"], "--out"),
    ("rollout --frame-every 0", ["rollout", "--frame-every", "0"], "--frame-every"),
    ("demo --episodes 0", ["demo", "--episodes", "0"], "--episodes"),
    ("bench --steps 0", ["bench", "--steps", "0"], "--steps"),
    ("rollout --format avi", ["rollout", "--format", "avi"], "--format"),
    ("demo --out under a file", ["demo", "--out", "{file}/d"], "--out"),
    ("bench --policy missing", ["bench", "--policy", "{tmp}/nope.pt", "--steps", "21"], "does not exist"),
    ("collect --out is a folder", ["collect", "--out", "{tmp}"], "--out"),
    ("collect --workers -1", ["collect", "--workers", "-1"], "--workers"),
    ("collect --out under a file", ["collect", "--out", "{file}/d.pt"], "--out"),
    ("train --eval-every 0", ["train", "--eval-every", "0", "--out", "{tmp}/t"], "--eval-every"),
    ("train --demos 0", ["train", "--demos", "0", "--out", "{tmp}/t"], "--demos"),
    ("train --units 0", ["train", "--units", "0", "--out", "{tmp}/t"], "--units"),
    ("train --lr 0", ["train", "--lr", "0", "--out", "{tmp}/t"], "--lr"),
    ("train --lr-final 2", ["train", "--lr-final", "2", "--out", "{tmp}/t"], "--lr-final"),
    ("train --dagger-beta -0.1", ["train", "--dagger-beta", "-0.1", "--out", "{tmp}/t"], "--dagger-beta"),
    ("train --cell bad", ["train", "--cell", "transformer", "--out", "{tmp}/t"], "--cell"),
    ("train --env unknown", ["train", "--env", "safeliquid/Nope-v0", "--out", "{tmp}/t"], "--env"),
    ("train --cell-dt 0", ["train", "--cell-dt", "0", "--out", "{tmp}/t"], "--cell-dt"),
    ("train --prior without its bound", ["train", "--prior", "accel", "--out", "{tmp}/t"], "--prior-bound"),
    ("train --prior-bound x", ["train", "--prior-bound", "x", "--out", "{tmp}/t"], "--prior-bound"),
    ("train --env-kwargs no value", ["train", "--env-kwargs", "obs_noise", "--out", "{tmp}/t"], "--env-kwargs"),
    ("train --env-kwargs unknown", ["train", "--env-kwargs", "obsnoise=0.1", "--out", "{tmp}/t"], "obsnoise"),
    ("train --slow-weight without prior", ["train", "--slow-weight", "1", "--out", "{tmp}/t"], "--slow-weight"),
    ("train --gain-groups unknown", ["train", "--gain-groups", "wheels", "--out", "{tmp}/t"], "gain_groups"),
]


@pytest.mark.parametrize("argv", [c[1] for c in CLI_CASES], ids=[c[0] for c in CLI_CASES])
def test_cli_errors_are_one_line_without_traceback(tmp_path, capsys, argv):
    phrase = next(c[2] for c in CLI_CASES if c[1] is argv)
    (tmp_path / "file").write_text("a file, not a folder")
    (tmp_path / "empty.pt").write_bytes(b"")
    args = [a.format(tmp=tmp_path, file=tmp_path / "file", empty=tmp_path / "empty.pt") for a in argv]
    try:
        code = cli.main(args)
    except SystemExit as stop:  # argparse rejects at parse time with exit code 2
        code = stop.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err, err
    lines = [line for line in err.strip().splitlines() if "error:" in line]
    assert len(lines) == 1, err
    assert phrase in lines[0], err
