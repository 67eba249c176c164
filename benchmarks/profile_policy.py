"""Where the shipped Navigate policy's control step spends its time: cProfile over 1,000 batch-1 steps.

python benchmarks/profile_policy.py
"""

import cProfile
import pstats

import gymnasium as gym
import torch

import safeliquid.envs  # noqa: F401 - registers the environments
from safeliquid import load_policy
from safeliquid.policies import shipped

torch.set_num_threads(1)
env = gym.make("safeliquid/Navigate-v0")
policy = load_policy(shipped("safeliquid/Navigate-v0"))
obs, _ = env.reset(seed=1)
policy.reset()
base, samples = env.unwrapped, []
for _ in range(200):  # states along one closed-loop episode
    state = base.safety_state()
    samples.append((obs, state))
    obs, *_ = env.step(policy.act(obs, state, base.constraints))
profile = cProfile.Profile()
profile.enable()
for _ in range(5):
    policy.reset()
    for o, s in samples:
        policy.act(o, s, base.constraints)
profile.disable()
pstats.Stats(profile).sort_stats("tottime").print_stats(12)
