"""The one BarrierNet layer: its batch-1 numpy path against its batched torch path, its settings and errors,
and the QP's numpy entry against ``solve_qp``."""

import ast
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

import safeliquid.envs  # noqa: F401 - registers the environments
from safeliquid.qp import MAX_ITER, OPTIMAL, QPSettings, solve_qp, solve_qp_numpy
from safeliquid.safety import (
    Barrier,
    BarrierLayer,
    ConstraintSet,
    DoubleIntegrator,
    SafetyFilter,
    SampledData,
    position,
    sphere_obstacle,
)

F64 = torch.float64
ROOT = Path(__file__).resolve().parents[1]


def disc_set(class_k="linear", disc_gains=None):
    model = DoubleIntegrator(2)
    samples = torch.randn(32, 4, generator=torch.Generator().manual_seed(0), dtype=F64) * 2
    barriers = sphere_obstacle("disc", position([0, 1]), [0.0, 0.0], 1.0, gains=disc_gains)
    barriers.append(Barrier("speed", lambda x: 9.0 - x[:, 2:].square().sum(1), class_k=class_k, gains=[2.0]))
    return ConstraintSet(model, barriers, samples, u_min=[-5.0, -5.0], u_max=[5.0, 5.0])


def near_states(rng, count):
    """States near the disc, moving at it or past it: where the rows and the correction are active."""
    angle = rng.uniform(0, 2 * np.pi, count)
    radius = rng.uniform(1.02, 2.0, count)
    pos = np.stack([np.cos(angle), np.sin(angle)], 1) * radius[:, None]
    vel = -pos * rng.uniform(0.0, 2.0, (count, 1)) + rng.normal(0, 0.5, (count, 2))
    return np.concatenate([pos, vel], 1)


@pytest.mark.parametrize("class_k", ["linear", "cubic"], ids=["closed-form-rows", "autograd-rows"])
@pytest.mark.parametrize("learned", [False, True], ids=["default-gains", "learned-gains"])
def test_numpy_path_equals_the_torch_path(class_k, learned):
    cs = disc_set(class_k)
    layer = BarrierLayer(cs, dt=0.05)
    rng = np.random.default_rng(0)
    states = near_states(rng, 60)
    u_ref = rng.uniform(-5, 5, (60, 2))
    gains = rng.uniform(0.5, 4.0, (60, cs.gain_count)) if learned else None
    with torch.no_grad():
        u_t, rec_t = layer(
            torch.from_numpy(states), torch.from_numpy(u_ref), None if gains is None else torch.from_numpy(gains)
        )
    corrected = 0
    for i in range(60):
        u, rec = layer.project(states[i], u_ref[i], None if gains is None else gains[i])
        np.testing.assert_allclose(u, u_t[i].numpy(), atol=1e-7)
        np.testing.assert_allclose(rec.barrier[0], rec_t.barrier[i].numpy(), atol=1e-12)
        assert int(rec.status[0]) == int(rec_t.status[i]) and int(rec.corrections[0]) == int(rec_t.corrections[i])
        corrected += int(rec.corrections[0]) > 0
    assert corrected > 0 and bool(rec_t.active.any())  # the comparison covered corrected, active solves


def test_the_correction_keeps_the_predicted_next_sample_above_the_margin():
    """Wherever the layer reports no fallback, the model's next sample clears the margin; where the rows
    cannot make it (too fast for the bound), the layer says so. ``test_safety_discrete`` shows the violations
    that follow without the correction."""
    cs = disc_set()
    margin, dt = 1e-3, 0.3
    layer = BarrierLayer(cs, dt=dt, margin=margin)
    checked, corrected, fallbacks = 0, 0, 0
    for x in near_states(np.random.default_rng(1), 400):
        u, rec = layer.project(x, -5.0 * x[:2] / np.linalg.norm(x[:2]))  # full force at the disc
        corrected += int(rec.corrections[0] > 0)
        if rec.fallback[0]:
            fallbacks += 1
            continue
        checked += 1
        h_next = cs.values_numpy(cs.model.step_numpy(x[None], u[None], dt))[0]
        assert h_next.min() >= margin - 1e-9
    assert checked > 20 and corrected > 20 and fallbacks > 0


def test_filter_is_the_layer_with_default_gains_on_a_real_environment():
    env = gym.make("safeliquid/Navigate-v0").unwrapped
    env.reset(seed=3)
    filt = SafetyFilter(env.constraints, dt=env.dt)
    rng = np.random.default_rng(2)
    for _ in range(20):
        x = env.safety_state() + np.r_[0, 0, rng.normal(0, 1, 2)]
        u_raw = rng.uniform(-5, 5, 2)
        u_np, _ = filt.filter_numpy(x, u_raw)
        u_t, _ = filt.filter(torch.from_numpy(x[None]), torch.from_numpy(u_raw[None]))
        np.testing.assert_allclose(u_np, u_t[0].numpy(), atol=1e-7)
    env.close()


@pytest.mark.parametrize(
    "call,error,match",
    [
        (lambda f: f.filter_numpy(np.full(4, np.nan), np.zeros(2)), ValueError, "x contains NaN"),
        (lambda f: f.filter_numpy(np.zeros(3), np.zeros(2)), ValueError, r"x must have shape \(4,\)"),
        (lambda f: f.filter_numpy(np.ones(4) * 3, np.zeros(3)), ValueError, r"u_raw must have shape \(2,\)"),
        (lambda f: f.filter(torch.ones(1, 4, dtype=F64), np.zeros((1, 2))), TypeError, "u_raw must be a torch"),
        (
            lambda f: f.filter(torch.ones(1, 4, dtype=F64), torch.zeros(1, 2)),
            TypeError,
            "u_raw must have x's dtype torch.float64",
        ),
        (lambda f: f.layer.project(np.ones(4) * 3, np.zeros(2), -np.ones(3)), ValueError, "gains must be positive"),
        (lambda f: f.layer.project(np.ones(4) * 3, np.zeros(2), np.ones(2)), ValueError, r"gains must have shape"),
    ],
)
def test_bad_input_is_named(call, error, match):
    with pytest.raises(error, match=match):
        call(SafetyFilter(disc_set(), dt=0.05))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"dt": 0.0}, "dt must be a positive"),
        ({"dt": 0.05, "gamma": 0.0}, r"gamma must be in \(0, 1\]"),
        ({"dt": 0.05, "margin": -1.0}, "margin must be a finite number >= 0"),
        ({"margin": 0.1}, "margin needs dt"),
        ({"dt": 0.05, "tries": -1}, "tries must be an integer >= 0"),
        ({"dt": 0.05, "disturbance": [-1.0, 0.0]}, "disturbance must be finite bounds >= 0"),
        ({"disturbance": 1.0}, "disturbance needs dt"),
    ],
)
def test_layer_settings_are_checked(kwargs, match):
    with pytest.raises(ValueError, match=match):
        BarrierLayer(disc_set(), **kwargs)


def test_sampled_data_defaults_to_the_constraint_sets_margin():
    env = gym.make("safeliquid/CartPoleRail-v0").unwrapped
    env.reset(seed=0)
    layer = BarrierLayer(env.constraints, dt=env.dt)
    assert layer.sampling == SampledData(env.dt, 1.0, env.constraints.sample_margin)
    assert BarrierLayer(env.constraints).sampling is None
    env.close()


def test_qp_numpy_entry_equals_solve_qp_and_names_bad_input():
    rng = np.random.default_rng(0)
    B, n, m = 20, 3, 5
    A = rng.standard_normal((B, n, n))
    Q = A @ A.transpose(0, 2, 1) + 0.1 * np.eye(n)
    q, G, h = rng.standard_normal((B, n)) * 3, rng.standard_normal((B, m, n)), rng.random((B, m))
    lb, ub = -np.ones((B, n)), np.ones((B, n))
    ref = solve_qp(*(torch.from_numpy(a) for a in (Q, q, G, h, lb, ub)))
    got = solve_qp_numpy(Q, q, G, h, lb, ub)
    np.testing.assert_allclose(got.u, ref.u.numpy(), atol=1e-12)
    np.testing.assert_array_equal(got.status, ref.status.numpy())
    assert (got.status == OPTIMAL).all()
    assert (solve_qp_numpy(Q, q, G, h, lb, ub, QPSettings(max_iter=1)).status == MAX_ITER).any()
    numpy_hint = r"Q must be a torch\.Tensor, got ndarray; for numpy arrays call solve_qp_numpy"
    with pytest.raises(TypeError, match=numpy_hint):
        solve_qp(Q, torch.from_numpy(q))
    with pytest.raises(ValueError, match=r"G must have shape \(20, 5, 3\)"):
        solve_qp_numpy(Q, q, G[:, :, :2], h)
    with pytest.raises(TypeError, match="h must have q's dtype float64"):
        solve_qp_numpy(Q, q, G, h.astype(np.float32))
    with pytest.raises(ValueError, match="q contains NaN"):
        solve_qp_numpy(Q, np.full_like(q, np.nan), G, h)
    with pytest.raises(TypeError, match=r"one dtype \(float32 or float64\), got Q torch.float64, q torch.float32"):
        solve_qp(torch.from_numpy(Q), torch.from_numpy(q).float())
    for bad, match in (({"penalty": 0.0}, "penalty must be"), ({"max_iter": 0}, "max_iter must be")):
        with pytest.raises(ValueError, match=match):
            QPSettings(**bad)


def test_nothing_outside_the_qp_package_imports_its_private_modules():
    """``safeliquid.qp``'s public names are the contract; its private modules (``_kernel``, ``native``) are not."""
    offenders = []
    for path in ROOT.glob("**/*.py"):
        rel = path.relative_to(ROOT)
        if rel.parts[0] in (".venv", "build") or rel.parts[:2] == ("safeliquid", "qp"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            if any(x.startswith(("safeliquid.qp._", "safeliquid.qp.native")) for x in names):
                offenders.append(str(rel))
    assert offenders == []


def test_a_set_with_bounds_only_clips_on_both_paths():
    cs = ConstraintSet(DoubleIntegrator(2), [], torch.randn(4, 4, dtype=F64), u_min=[-1.0, -1.0], u_max=[1.0, 1.0])
    layer = BarrierLayer(cs, dt=0.05)
    u_t, rec = layer(torch.zeros(2, 4, dtype=F64), torch.tensor([[3.0, -0.5], [-2.0, 2.0]], dtype=F64))
    torch.testing.assert_close(u_t, torch.tensor([[1.0, -0.5], [-1.0, 1.0]], dtype=F64))
    assert rec.barrier.shape == (2, 0) and not bool(rec.fallback.any())
    u, rec = layer.project(np.zeros(4), np.array([3.0, -0.5]))
    np.testing.assert_allclose(u, [1.0, -0.5])
    assert not rec.fallback[0]
