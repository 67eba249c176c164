"""The shipped policies in their environment's default, certified configuration, on held-out episodes.

    python benchmarks/bench_certified.py [--episodes 200] [--env ENV ...]

Every environment's default constraint set is certified under its input bounds. ArmReach also has an
uncertified configuration (``certified=False``: the HOCBF set alone, which its shipped policy was trained
with): it is measured beside the default on the same seeds (2,000,000+), in the same run, to show what the
certified set costs (success, fallback steps, compute per step). Writes ``benchmarks/results/certified.json``
and prints a markdown table.
"""

from __future__ import annotations

import argparse

import gymnasium as gym
import torch
from _util import write

import safeliquid.envs  # noqa: F401 - registers the environments
from safeliquid import load_policy
from safeliquid.envs import ENV_IDS
from safeliquid.policies import shipped
from safeliquid.qp import warmup
from safeliquid.train.rollout import PolicyController, evaluate

# Configurations measured beside each environment's default.
ALTERNATIVES = {"safeliquid/ArmReach-v0": {"certified": False}}
KEYS = ("success_rate", "violating_steps", "unguarded_contacts", "min_barrier", "fallback_steps")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=200, help="held-out episodes per configuration")
    parser.add_argument("--env", nargs="*", default=list(ENV_IDS), help="environments (default: all)")
    args = parser.parse_args()
    if args.episodes < 1:
        parser.error(f"--episodes must be >= 1, got {args.episodes}")
    torch.set_num_threads(1)
    warmup()
    rows = []
    for env_id in args.env:
        for options in ({}, ALTERNATIVES.get(env_id)):
            if options is None:
                continue
            env = gym.make(env_id, **options)
            metrics = evaluate(env, PolicyController(load_policy(shipped(env_id))), args.episodes, 2_000_000)
            env.close()
            row = {"env": env_id, "options": options, **{k: metrics[k] for k in KEYS}}
            row["mean_step_ms"] = metrics["mean_step_ms"]
            row["success_ci"] = metrics["success_rate_ci"]
            rows.append(row)
            print(row, flush=True)
    path = write("certified", {"episodes": args.episodes, "results": rows})
    print("\n| env | options | success | violating steps | contacts (h >= 0) | min h | fallback steps | ms per step |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        ci = r["success_ci"]
        success = f"{r['success_rate']:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")
        cells = [r["env"].split("/")[1], r["options"] or "default", success, r["violating_steps"]]
        cells += [r["unguarded_contacts"], f"{r['min_barrier']:.4f}", r["fallback_steps"], f"{r['mean_step_ms']:.2f}"]
        print("| " + " | ".join(str(c) for c in cells) + " |")
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
