"""Fine-tuning probe on ArmReach: does weighting the imitation loss towards the goal cure near-goal stalls?

Fine-tunes a task-prior ArmReach checkpoint on a training run's ``data.pt`` (its demonstrations and DAgger
episodes) with :func:`safeliquid.train.imitation.gradient_step`, at a constant learning rate, either with every
step counting once (``--weight none``) or with the steps weighted by the inverse square of the expert's
nominal end-effector speed there, ``min(k d, speed)`` with ``d`` the distance to the target (``--weight
goal``, the relative error of the commanded speed; a floor ``sigma`` bounds the weight at the target), or
with ``train --slow-weight``'s weight, which reads the expert's command back from its label (``--weight slow``,
:func:`safeliquid.train.imitation.slow_weight`, the same floor). Then
runs closed-loop episodes and reports success and how many failures ended within 0.1 m of the target
(``--updates 0``: the checkpoint as it is).

    python benchmarks/probes/probe_goal_weight.py --policy policies/armreach_ltc_barrier.pt \\
        --data runs/arm_skip/data.pt --weight goal --json runs/probe_goal.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # benchmarks/_util.py
from _util import ARM, load_arm_task_policy

import safeliquid.envs  # noqa: F401 - registers the environments
from safeliquid.envs.experts.arm import ArmReachExpert
from safeliquid.train.data import load_episodes, make_batch
from safeliquid.train.imitation import gradient_step, slow_weight
from safeliquid.train.rollout import PolicyController, run_episode

GOAL_OFFSET = slice(17, 20)  # ArmReachEnv._observe: q (7), q' (7), ee (3), target - ee (3), ...
SIGMA = 0.1  # speed floor (m/s): bounds the weight at the target


def goal_weight(obs: torch.Tensor, expert: ArmReachExpert) -> torch.Tensor:
    """``obs (B, T, 24)`` -> ``(B, T)``: ``speed^2 / min((k d)^2 + sigma^2, speed^2)`` with the expert's
    gain ``k`` and ``speed``; 1 far from the target."""
    nominal = (expert.gain * obs[..., GOAL_OFFSET].norm(dim=-1)).square() + SIGMA**2
    return expert.speed**2 / torch.clamp(nominal, max=expert.speed**2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", required=True, help="an ArmReach checkpoint trained with --prior task")
    parser.add_argument("--data", required=True, help="a training run's data.pt")
    parser.add_argument("--weight", choices=("none", "goal", "slow"), default="goal", help="per-step loss weight")
    parser.add_argument("--updates", type=int, default=1500, help="gradient updates of 16 episodes")
    parser.add_argument("--lr", type=float, default=3e-4, help="Adam learning rate (constant)")
    parser.add_argument("--seed", type=int, default=3_000_000, help="first evaluation seed")
    parser.add_argument("--episodes", type=int, default=200, help="evaluation episodes")
    parser.add_argument("--label-gain", type=float, default=4.0,
                        help="--weight goal: the ArmReach expert's gain when --data was collected (1/s; default "
                        "%(default)s, the gain of earlier releases, which labelled runs/arm_skip/data.pt)")  # fmt: skip
    parser.add_argument("--json", help="write the result here")
    args = parser.parse_args()
    torch.set_num_threads(1)

    policy = load_arm_task_policy(args.policy)
    episodes, _ = load_episodes(args.data)
    expert = ArmReachExpert(gain=args.label_gain)
    optim = torch.optim.Adam(policy.parameters(), lr=args.lr)
    rng = np.random.default_rng(7)
    policy.train()
    t0 = time.perf_counter()
    for _ in range(args.updates):
        pick = rng.choice(len(episodes), size=min(16, len(episodes)), replace=False)
        batch = make_batch([episodes[i] for i in pick], policy.config.gain_groups)
        weight = None
        if args.weight == "goal":
            weight = goal_weight(batch["obs"], expert)
        elif args.weight == "slow":
            weight = slow_weight(batch, "task", policy.config.prior_gain, SIGMA)
        gradient_step(policy, optim, batch, args.lr, weight)
    train_s = time.perf_counter() - t0

    policy.eval()
    env = gym.make(ARM)
    controller, rows = PolicyController(policy), []
    for seed in range(args.seed, args.seed + args.episodes):
        metrics, _ = run_episode(env, controller, seed)
        distance = float(np.linalg.norm(env.unwrapped.target - env.unwrapped.end_effector()))
        rows.append({"seed": seed, "success": metrics.success, "violating_steps": metrics.violating_steps,
                     "final_distance": distance})  # fmt: skip
    env.close()
    failed = [r for r in rows if not r["success"]]
    result = {
        "policy": args.policy,
        "weight": args.weight,
        "updates": args.updates,
        "train_s": train_s,
        "success_rate": 1.0 - len(failed) / len(rows),
        "failures_within_0.1m": sum(r["final_distance"] < 0.1 for r in failed),
        "violating_steps": sum(r["violating_steps"] for r in rows),
        "per_episode": rows,
    }
    print(json.dumps({k: v for k, v in result.items() if k != "per_episode"}, indent=2))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)


if __name__ == "__main__":
    main()
