"""ArmReach's certified set: the arm-braking backup's implicit safe set (envs/arm_backup.py)."""

import gymnasium as gym
import numpy as np
import pytest
import torch

import safeliquid.envs  # noqa: F401 - registers the environments
from safeliquid.safety import BarrierLayer
from safeliquid.safety.backup_set import keeps, rollout
from safeliquid.safety.certify import certify, sample_box


@pytest.fixture(scope="module")
def env():
    env = gym.make("safeliquid/ArmReach-v0").unwrapped  # certified by default
    env.reset(seed=3)
    yield env
    env.close()


def box(env, count, seed):
    low, high = np.r_[env.q_low, -6.0 * np.ones(7)], np.r_[env.q_high, 6.0 * np.ones(7)]
    return sample_box(low, high, count, seed)


def test_the_numpy_step_is_the_torch_step(env):
    x = box(env, 5, 0).numpy()
    u = np.random.default_rng(0).uniform(-1, 1, (5, 7)) * env.action_bound
    ref = env.model.step(torch.from_numpy(x), torch.from_numpy(u), env.dt).numpy()
    np.testing.assert_allclose(env.model.step_numpy(x, u, env.dt), ref, atol=1e-12)


def test_the_compiled_test_is_the_generic_rollout(env):
    """The compiled rollout test (``BrakeArm.keeps``) against the generic rollout of the same law and terminal
    test on the model's step, at states from rest to 6 rad/s (some leave the set, some stay)."""
    c = env.constraints
    x = box(env, 200, 4).numpy()
    x[:, 7:] *= np.random.default_rng(4).uniform(0, 1, (200, 1)) ** 2  # speeds spread towards rest
    fast = c.backup.keeps(x)
    np.testing.assert_array_equal(fast, rollout(c, x)[0])
    assert 0.1 < fast.mean() < 0.95


def test_the_backup_is_within_the_ratings_and_the_same_in_torch_and_numpy(env):
    x = box(env, 20, 1)
    u = env.constraints.backup.control(x.numpy())
    assert u.shape == (20, 7) and (np.abs(u) <= env.action_bound + 1e-12).all()
    np.testing.assert_allclose(env.constraints.backup.control(x).numpy(), u, atol=1e-12)


def test_the_implicit_set_is_certified_and_invariant_under_the_backup(env):
    c = env.constraints
    assert c.certificate is not None and c.certificate.certified, c.certificate
    cert = certify(c, box(env, 60, 2))
    assert cert.checked >= 20 and cert.certified, [f.describe() for f in cert.failures[:3]]
    x = box(env, 30, 3).numpy()
    x = x[keeps(c, x)]
    for _ in range(10):  # the tail property along the rollouts
        x = c.model.step_numpy(x, c.backup.control(x), c.backup.dt)
        assert keeps(c, x).all() and (c.values_numpy(x) >= 0).all()


def test_the_layer_keeps_the_backups_clearance_above_the_model_margin(env):
    """The QP's next sample clears each barrier by the backup's ``clearance`` more than the model's margin, the
    room the braking needs: without it the shipped policy's forearm stalled on the sphere (NOTES.md)."""
    c = env.constraints
    assert c.backup.clearance > 0
    layer = BarrierLayer(c, dt=env.dt)
    assert layer.sampling.margin == pytest.approx(c.sample_margin + c.backup.clearance)
    assert BarrierLayer(c, dt=env.dt, margin=0.0).sampling.margin == 0.0  # an explicit margin is the caller's
