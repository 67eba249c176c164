"""CartPoleRail's certified set: the brake-and-hold backup's implicit safe set (envs/cartpole_backup.py)."""

import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch

import safeliquid.envs  # noqa: F401 - registers the environments
from safeliquid.safety import Backup, BarrierLayer
from safeliquid.safety.backup_set import keeps, rollout
from safeliquid.safety.certify import certify, sample_box
from safeliquid.safety.layer import BLEND

LOW, HIGH = np.array([-1.5, -np.pi, -4.0, -15.0]), np.array([1.5, np.pi, 4.0, 15.0])


@pytest.fixture(scope="module")
def env():
    env = gym.make("safeliquid/CartPoleRail-v0").unwrapped
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # certified: construction must not warn
        env.reset(seed=0)
    yield env
    env.close()


def test_the_compiled_test_is_the_generic_rollout(env):
    c = env.constraints
    x = sample_box(LOW, HIGH, 3000, seed=5).numpy()
    fast = c.backup.keeps(x)
    generic, _ = rollout(c, x)
    np.testing.assert_array_equal(fast, generic)
    assert 0.2 < fast.mean() < 0.8  # neither empty nor everything: the set caps the pole's energy by the rail


def test_the_backup_is_within_the_bounds_and_the_same_in_torch_and_numpy(env):
    x = sample_box(LOW, HIGH, 500, seed=6)
    u = env.constraints.backup.control(x.numpy())
    assert u.shape == (500, 1) and np.abs(u).max() <= env.force_limit
    np.testing.assert_allclose(env.constraints.backup.control(x).numpy(), u, atol=1e-9)


def test_the_implicit_set_is_certified_and_invariant_under_the_backup(env):
    c = env.constraints
    assert c.certificate is not None and c.certificate.certified, c.certificate
    cert = certify(c, sample_box(LOW, HIGH, 4000, seed=7))
    assert cert.checked > 1000 and cert.certified, [f.describe() for f in cert.failures[:3]]
    # The tail property, along whole rollouts: the backup's every next sample is in the set again.
    x = sample_box(LOW, HIGH, 400, seed=8).numpy()
    x = x[keeps(c, x)]
    for _ in range(40):
        x = c.model.step_numpy(x, c.backup.control(x), c.backup.dt)
        assert keeps(c, x).all() and (c.values_numpy(x) >= 0).all()


def test_the_layer_keeps_the_next_sample_in_the_set_and_sends_the_backup_otherwise(env):
    """From sampled states of the implicit set and any input, the layer's action leads to a next sample inside
    the set again; where the QP's own answer would not, it is the backup or a blend with it, and the record
    says so. The batched
    torch path and the batch-1 numpy path agree."""
    c = env.constraints
    layer = BarrierLayer(c, dt=env.dt)
    rng = np.random.default_rng(9)
    x = sample_box(LOW, HIGH, 600, seed=9).numpy()
    x = x[keeps(c, x)][:200]
    u_ref = rng.choice([-15.0, 15.0], size=(x.shape[0], 1))
    u, record = layer(torch.from_numpy(x), torch.from_numpy(u_ref))
    u = u.detach().numpy()
    assert keeps(c, c.model.step_numpy(x, u, env.dt)).all()
    fell = record.fallback.numpy()
    assert 0 < fell.sum() < len(fell)
    # A fallback sends the backup or a blend with the QP's input (BLEND), each one's next sample in the set.
    u_b = c.backup.control(x[fell])
    saved, c.backup = c.backup, None
    try:
        qp_answer = np.array([layer.project(xi, ui)[0] for xi, ui in zip(x[fell], u_ref[fell], strict=True)])
    finally:
        c.backup = saved
    candidates = np.stack([u_b] + [s * qp_answer + (1.0 - s) * u_b for s in BLEND], 1)
    assert (np.abs(candidates - u[fell][:, None]).min(1) < 1e-9).all()
    assert (np.abs(u[fell] - u_b) > 1e-9).any()  # some take a blend, not the whole stop
    for i in list(np.flatnonzero(fell)[:3]) + list(np.flatnonzero(~fell)[:3]):
        u_i, record_i = layer.project(x[i], u_ref[i])
        assert record_i.fallback[0] == fell[i] and u_i == pytest.approx(u[i], abs=1e-9)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"horizon": -1}, "horizon must be an integer >= 0"),
        ({"horizon": 5}, "terminal must be given"),
        ({"horizon": 5, "terminal": lambda x: x[:, 0] > 0, "margin": -1.0}, "margin must be a finite number >= 0"),
        ({"clearance": float("nan")}, "clearance must be a finite number >= 0"),
    ],
)
def test_backup_settings_are_checked(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Backup(lambda x: 0 * x[:, :1], 0.02, **kwargs)


def test_the_certificate_is_computed_once_per_cart_pole(env):
    """A reset rebuilds the same set: it reuses the certificate (0.2 s) instead of testing again."""
    first = env.constraints.certificate
    env.reset(seed=1)
    assert env.constraints.certificate is first
    other = gym.make("safeliquid/CartPoleRail-v0", rail=1.2).unwrapped
    other.reset(seed=0)
    assert other.constraints.certificate is not first and other.constraints.certificate.certified
    other.close()


def test_compiled_step_equals_the_torch_step():
    """``CartPole.step_numpy`` (compiled) and the model's torch step: the same substeps, to rounding."""
    env = gym.make("safeliquid/CartPoleRail-v0").unwrapped
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    x = np.c_[rng.uniform(-1, 1, 50), rng.uniform(-np.pi, np.pi, 50), rng.uniform(-4, 4, 50), rng.uniform(-15, 15, 50)]
    u = rng.uniform(-15, 15, (50, 1))
    ref = env.model.step(torch.from_numpy(x), torch.from_numpy(u), env.dt).numpy()
    np.testing.assert_allclose(env.model.step_numpy(x, u, env.dt), ref, rtol=0, atol=1e-12)
    env.close()
