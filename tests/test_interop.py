"""Any gymnasium RL library trains through the safety wrapper: stable-baselines3's PPO for a few hundred steps
on Navigate, with every step it explores counted for violations."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from stable_baselines3 import PPO

import safeliquid.envs  # noqa: F401 - registers the environments
from safeliquid.safety import SafetyFilterWrapper


class CountViolations(gym.Wrapper):
    """Counts the steps whose ``info["cost"]`` is positive (the environment's violation signal)."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.violating = self.steps = 0

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.steps += 1
        self.violating += int(info["cost"] > 0)
        return obs, reward, terminated, truncated, info


def test_stable_baselines3_ppo_explores_through_the_filter_without_violations():
    env = CountViolations(SafetyFilterWrapper(gym.make("safeliquid/Navigate-v0")))
    model = PPO("MlpPolicy", env, n_steps=128, batch_size=64, n_epochs=1, seed=0, device="cpu")
    model.learn(total_timesteps=384)
    assert env.steps >= 384 and env.violating == 0
    obs, _ = env.reset(seed=1)
    action, _ = model.predict(obs, deterministic=True)
    assert action.shape == env.action_space.shape and np.isfinite(action).all()
    env.close()
