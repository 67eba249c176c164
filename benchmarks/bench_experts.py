"""The experts' success rate, violations and episode time over seeded episodes (default 200 per environment).

Writes ``benchmarks/results/experts.json``.

    python benchmarks/bench_experts.py [--episodes 200] [--env safeliquid/Navigate-v0]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from _util import write
from tqdm import tqdm

import safeliquid.envs  # noqa: F401 - registers the environments
from safeliquid.envs import ENV_IDS
from safeliquid.envs.experts import make_expert


def evaluate(env_id: str, episodes: int) -> dict:
    env, expert = gym.make(env_id), make_expert(env_id)
    dt = env.unwrapped.dt
    success, violating, lengths, walls, min_h = [], [], [], [], []
    for seed in tqdm(range(episodes), desc=env_id, leave=False):
        env.reset(seed=seed)
        expert.reset(env)
        t0, steps, cost, lowest, done = time.perf_counter(), 0, 0.0, np.inf, False
        while not done:
            _, _, term, trunc, info = env.step(expert(env))
            steps, cost, lowest = steps + 1, cost + info["cost"], min(lowest, info["barrier_min_h"])
            done = term or trunc
        walls.append(time.perf_counter() - t0)
        success.append(bool(info["is_success"]))
        violating.append(cost)
        lengths.append(steps)
        min_h.append(lowest)
    env.close()
    return {
        "episodes": episodes,
        "success_rate": float(np.mean(success)),
        "violating_steps": float(np.sum(violating)),
        "episodes_with_violation": int(np.sum(np.array(violating) > 0)),
        "min_barrier": float(np.min(min_h)),
        "mean_episode_steps": float(np.mean(lengths)),
        "mean_episode_sim_s": float(np.mean(lengths) * dt),
        "mean_episode_wall_s": float(np.mean(walls)),
        "mean_control_step_ms": float(np.sum(walls) / np.sum(lengths) * 1e3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=200, help="seeded episodes per environment (default 200)")
    parser.add_argument("--env", action="append", choices=ENV_IDS,
                        help="environment id (default: all); the others' results in experts.json are kept")  # fmt: skip
    args = parser.parse_args()
    torch.set_num_threads(1)
    results = {env_id: evaluate(env_id, args.episodes) for env_id in args.env or ENV_IDS}
    for env_id, r in results.items():
        print(
            f"{env_id:28s} success {r['success_rate']:.3f}  violating steps {r['violating_steps']:.0f}  "
            f"episode {r['mean_episode_sim_s']:.2f} s simulated, {r['mean_episode_wall_s']:.2f} s wall"
        )
    kept = Path(__file__).parent / "results" / "experts.json"
    if args.env and kept.exists():  # a partial run updates its environments, keeps the others
        results = {**json.loads(kept.read_text()).get("results", {}), **results}
    print("wrote", write("experts", {"results": results}))


if __name__ == "__main__":
    main()
