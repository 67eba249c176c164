"""Roll out an environment's expert (planner + tracker + CBF filter) and write a GIF.

python examples/expert_gif.py [--env safeliquid/Navigate-v0] [--seed 0] [--out runs/expert.gif]
"""

import argparse
from pathlib import Path

import gymnasium as gym
import imageio.v2 as imageio

import safeliquid.envs  # noqa: F401 - registers the environments
from safeliquid.envs import ENV_IDS
from safeliquid.envs.experts import make_expert

parser = argparse.ArgumentParser(description="Roll out an expert and write a GIF.")
parser.add_argument("--env", default=ENV_IDS[0], choices=ENV_IDS, help="environment id (default %(default)s)")
parser.add_argument("--seed", type=int, default=0, help="episode seed (default %(default)s)")
parser.add_argument("--out", type=Path, default=Path("runs/expert.gif"), help="GIF path (default %(default)s)")
args = parser.parse_args()

env = gym.make(args.env, render_mode="rgb_array")
expert = make_expert(args.env)
env.reset(seed=args.seed)
expert.reset(env)
frames, done, cost, steps = [env.render()], False, 0.0, 0
while not done:
    _, _, terminated, truncated, info = env.step(expert(env))
    cost, steps, done = cost + info["cost"], steps + 1, terminated or truncated
    if steps % 2 == 0:  # every other control step keeps the GIF small
        frames.append(env.render())
env.close()
args.out.parent.mkdir(parents=True, exist_ok=True)
imageio.mimsave(args.out, frames, duration=1000 * 2 * env.unwrapped.dt, loop=0)
print(
    f"{args.env} seed {args.seed}: success {info['is_success']}, {steps} steps, episode cost {cost:.0f} -> {args.out}"
)
