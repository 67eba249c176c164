"""The shipped policies give the recorded actions on the recorded observations and states
(``tools/record_shipped_actions.py``): a refactor must not change what a shipped policy does. Exact to 1e-9 on
the recording's CPU model with its torch and numba; elsewhere to 1e-4 relative, since other CPUs' kernels
round differently (the recurrent state carries that over 100 steps)."""

from __future__ import annotations

import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import safeliquid.envs  # noqa: F401 - registers the environments
from safeliquid.envs import ENV_IDS
from safeliquid.policies import load_policy, shipped

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
from record_shipped_actions import machine

DATA = np.load(Path(__file__).parent / "data" / "shipped_actions.npz")


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_shipped_policy_gives_the_recorded_actions(env_id, one_thread):
    name = env_id.split("/")[1]
    obs, states, actions = (DATA[f"{name}/{key}"] for key in ("obs", "state", "action"))
    env = gym.make(env_id)
    env.reset(seed=2_000_000)  # the recorded episode's scene: its constraint set
    policy = load_policy(shipped(env_id))
    policy.reset()
    got = np.stack(
        [policy.act(o.astype(np.float32), s, env.unwrapped.constraints) for o, s in zip(obs, states, strict=True)]
    )
    env.close()
    assert got.shape == actions.shape
    same = str(DATA["machine"]) == machine()
    np.testing.assert_allclose(got, actions, rtol=0 if same else 1e-4, atol=1e-9 if same else 1e-4)
