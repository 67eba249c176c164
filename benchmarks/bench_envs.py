"""Environment steps per second, one process, random actions, constraints evaluated; peers in the same run.

Every safeliquid step evaluates all barrier values (they are in ``info``); resets are not timed. Each
environment is timed raw and behind :class:`~safeliquid.safety.SafetyFilterWrapper` (the safety layer's
batch-1 path on every action) in the same run, in alternating rounds (the median round per configuration):
the ratio is the wrapper's cost (ArmReach also without its certified set, ``certified=False``).
Peers: panda-gym's ``PandaReach-v3`` (a PyBullet arm, when installed) and gymnasium's ``CartPole-v1`` (pure
Python, the floor). Writes ``benchmarks/results/envs.json``.

    python benchmarks/bench_envs.py [--steps 5000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import time

import gymnasium as gym
import numpy as np
import torch
from _util import write

import safeliquid.envs  # noqa: F401 - registers the environments
from safeliquid.envs import ENV_IDS
from safeliquid.qp import warmup
from safeliquid.safety import SafetyFilterWrapper

# Configurations also timed behind the wrapper: ArmReach without its certified set (the HOCBF set alone), to show
# what the certificate's rollout test costs per step.
ALTERNATIVES = {"safeliquid/ArmReach-v0": ("uncertified", {"certified": False})}
TARGETS = {"safeliquid/Navigate-v0": 3000, "safeliquid/CartPoleRail-v0": 3000, "safeliquid/ArmReach-v0": 1000}


def steps_per_second(env: gym.Env, steps: int) -> float:
    """Steps per second of ``step`` alone: random actions drawn before the clock starts; the resets at episode
    ends run off the clock (an ArmReach reset builds and certifies its constraint set, a few hundred ms, and
    the number of episode ends differs between runs)."""
    env.reset(seed=0)
    env.action_space.seed(0)
    actions = [env.action_space.sample() for _ in range(steps)]
    elapsed = 0.0
    for action in actions:
        t0 = time.perf_counter()
        _, _, term, trunc, _ = env.step(action)
        elapsed += time.perf_counter() - t0
        if term or trunc:
            env.reset()
    return steps / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--steps", type=int, default=5000, help="steps per environment and round (default 5000; ArmReach a fifth)"
    )
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds per configuration (default 5)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    warmup()
    rows = {}
    for env_id in ENV_IDS:
        steps = args.steps if env_id != "safeliquid/ArmReach-v0" else max(args.steps // 5, 1)
        configs = {"raw": gym.make(env_id), "wrapped": SafetyFilterWrapper(gym.make(env_id))}
        if env_id in ALTERNATIVES:
            name, options = ALTERNATIVES[env_id]
            configs[name] = SafetyFilterWrapper(gym.make(env_id, **options))
        # Alternating rounds, the median per configuration: the machine's speed drifts within a run, and each
        # configuration then sees the same drift.
        seconds = {key: [] for key in configs}
        for _ in range(args.rounds):
            for key, env in configs.items():
                seconds[key].append(1.0 / steps_per_second(env, steps))
        per_step = {key: float(np.median(value)) for key, value in seconds.items()}
        for env in configs.values():
            env.close()
        raw, wrapped = 1.0 / per_step["raw"], 1.0 / per_step["wrapped"]
        rows[env_id] = {
            "steps_per_s": raw,
            "target": TARGETS[env_id],
            "wrapped_steps_per_s": wrapped,
            "wrapped_ratio": wrapped / raw,
            "wrapper_overhead_ms": 1e3 * (per_step["wrapped"] - per_step["raw"]),
        }
        for key in configs.keys() - {"raw", "wrapped"}:
            rows[env_id][f"wrapper_overhead_ms_{key}"] = 1e3 * (per_step[key] - per_step["raw"])
    try:
        import panda_gym  # noqa: F401

        env = gym.make("PandaReach-v3")
        rows["PandaReach-v3 (panda-gym)"] = {"steps_per_s": steps_per_second(env, args.steps)}
        env.close()
    except ImportError:
        print("panda-gym not installed: PandaReach-v3 skipped (pip install panda-gym)")
    env = gym.make("CartPole-v1")
    rows["CartPole-v1 (gymnasium)"] = {"steps_per_s": steps_per_second(env, args.steps)}
    for name, row in rows.items():
        target = f"  target >= {row['target']}" if "target" in row else ""
        wrapped = ""
        if "wrapped_steps_per_s" in row:
            wrapped = (
                f"  wrapped {row['wrapped_steps_per_s']:7.0f} steps/s ({row['wrapped_ratio']:.0%} of raw, "
                f"+{row['wrapper_overhead_ms']:.2f} ms/step)"
            )
        for key in (k for k in row if k.startswith("wrapper_overhead_ms_")):
            wrapped += f"; {key.removeprefix('wrapper_overhead_ms_')} +{row[key]:.2f} ms/step"
        print(f"{name:32s} {row['steps_per_s']:9.0f} steps/s{target}{wrapped}")
    print("wrote", write("envs", {"steps": args.steps, "rounds": args.rounds, "results": rows}))


if __name__ == "__main__":
    main()
