"""Trace an ArmReach task-prior policy's failures: its commanded end-effector speed against the expert's label.

For each seeded episode the policy drives; at every step the expert's label
(:meth:`ArmReachExpert.task_velocity`, with its own via-point latch) is computed beside the policy's
command ``v`` (the task velocity before the Jacobian). Failed episodes print every 25th step; the JSON
summary gives, over the failed episodes' steps past ``--late``, the mean commanded speed, the mean label
speed and the mean distance to the target.

    python benchmarks/trace_armreach.py --policy policies/armreach_ltc_barrier.pt [--seed 2000000]
        [--episodes 12] [--late 150] [--json out.json]
"""

from __future__ import annotations

import argparse
import json

import gymnasium as gym
import numpy as np
import safeliquid.envs  # noqa: F401 - registers the environments
import torch
from _util import ARM, load_arm_task_policy
from safeliquid.envs.experts.arm import ArmReachExpert


def trace(policy, env: gym.Env, seed: int) -> tuple[bool, np.ndarray]:
    """One episode; returns success and per-step ``(distance, |v|, |v_label|, v . v_label / |v_label|)``."""
    base, expert, seen = env.unwrapped, ArmReachExpert(), {}
    accel = policy._accel

    def spy(raw: torch.Tensor, dyn: tuple) -> torch.Tensor:
        seen["v"] = (policy.config.task_bound * torch.tanh(raw)).detach().numpy().ravel()
        return accel(raw, dyn)

    policy._accel = spy
    obs, _ = env.reset(seed=seed)
    policy.reset()
    expert.reset(base)
    rows, done, info = [], False, {}
    try:
        while not done:
            ee = base.end_effector()
            label = expert.task_velocity(base)
            action = policy.act(obs, base.safety_state(), base.constraints)
            v = seen["v"]
            along = float(v @ label) / max(float(np.linalg.norm(label)), 1e-9)
            rows.append((np.linalg.norm(base.target - ee), np.linalg.norm(v), np.linalg.norm(label), along))
            obs, _, terminated, truncated, info = env.step(action)
            done = terminated or truncated
    finally:
        policy._accel = accel
    return bool(info.get("is_success", False)), np.array(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--policy", required=True, help="a checkpoint trained with --prior task on ArmReach")
    ap.add_argument("--seed", type=int, default=2_000_000, help="first seed")
    ap.add_argument("--episodes", type=int, default=12, help="episodes")
    ap.add_argument("--late", type=int, default=150, help="summarise failed episodes' steps from this one on")
    ap.add_argument("--json", help="write the summary here")
    args = ap.parse_args()
    torch.set_num_threads(1)
    policy = load_arm_task_policy(args.policy)
    env = gym.make(ARM)
    late = []
    for seed in range(args.seed, args.seed + args.episodes):
        success, rows = trace(policy, env, seed)
        if success:
            continue
        print(f"seed {seed}: failed, final distance {rows[-1, 0]:.3f} m, closest {rows[:, 0].min():.3f} m")
        for t in range(0, len(rows), 25):
            d, v, label, along = rows[t]
            print(f"  step {t:3d}  distance {d:.3f}  |v| {v:.3f}  |label| {label:.3f}  v along label {along:+.3f}")
        late.append(rows[args.late :])
    summary = {"policy": args.policy, "seeds": [args.seed, args.seed + args.episodes], "failed": len(late)}
    if late:
        steps = np.concatenate(late)
        summary.update(late_steps=len(steps), mean_distance=float(steps[:, 0].mean()),
                       mean_speed=float(steps[:, 1].mean()), mean_label_speed=float(steps[:, 2].mean()))  # fmt: skip
    print(json.dumps(summary, indent=1))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(summary, fh, indent=1)


if __name__ == "__main__":
    main()
