"""Trace an ArmReach task-prior policy's failures: its commanded end-effector speed against the expert's label.

For each seeded episode the policy drives; at every step the expert's label
(:meth:`ArmReachExpert.task_velocity`, with its own via-point latch) is computed beside the policy's
command ``v`` (the task velocity before the Jacobian). Failed episodes print every 25th step; the JSON
summary gives, over the failed episodes' steps past ``--late``, the mean commanded speed, the mean label
speed and the mean distance to the target.

``--sweep``: for each failure, the command at its last observation with the target moved along the
line to it (goal offset ``s`` times its unit direction, ``s`` = 0.02 to 0.5 m), from a fresh recurrent
state held on that observation for 30 steps. A command that is ~0 at some ``s`` > 0.05 m and points
away from the target below it is a spurious equilibrium of the learned velocity field: a stall that
depends on the state, not on the time or the recurrent state.

    python benchmarks/probes/trace_armreach.py --policy policies/armreach_ltc_barrier.pt [--seed 2000000]
        [--episodes 12] [--late 150] [--expert-gain 10] [--sweep] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # benchmarks/_util.py
from _util import ARM, load_arm_task_policy

import safeliquid.envs  # noqa: F401 - registers the environments
from safeliquid.envs.experts.arm import ArmReachExpert
from safeliquid.policies.priors import model_terms

GOAL_OFFSET = slice(17, 20)  # ArmReachEnv._observe: q (7), q' (7), ee (3), target - ee (3), ...
SWEEP = (0.02, 0.05, 0.08, 0.11, 0.15, 0.2, 0.3, 0.5)


@contextmanager
def recording(policy) -> Iterator[dict[str, np.ndarray]]:
    """Within the block, ``seen["v"]`` is the task velocity the policy last commanded (the network's
    residual plus any ``goal_gain`` term; shape as the call's)."""
    seen, original = {}, policy.task_velocity

    def spy(raw: torch.Tensor, goal: torch.Tensor | None = None) -> torch.Tensor:
        v = original(raw, goal)
        seen["v"] = v.detach().numpy()
        return v

    policy.task_velocity = spy
    try:
        yield seen
    finally:
        del policy.task_velocity  # the class's method again


def trace(policy, env: gym.Env, seed: int, expert: ArmReachExpert) -> tuple[bool, np.ndarray, np.ndarray]:
    """One episode; returns success, per-step ``(distance, |v|, |v_label|, v . v_label / |v_label|)`` and
    the last observation."""
    base = env.unwrapped
    obs, _ = env.reset(seed=seed)
    policy.reset()
    expert.reset(base)
    rows, done, info = [], False, {}
    with recording(policy) as seen:
        while not done:
            ee = base.end_effector()
            label = expert.task_velocity(base)
            action = policy.act(obs, base.safety_state(), base.constraints)
            v = seen["v"].ravel()
            along = float(v @ label) / max(float(np.linalg.norm(label)), 1e-9)
            rows.append((np.linalg.norm(base.target - ee), np.linalg.norm(v), np.linalg.norm(label), along))
            obs, _, terminated, truncated, info = env.step(action)
            done = terminated or truncated
    return bool(info.get("is_success", False)), np.array(rows), obs


def sweep(policy, env: gym.Env, obs: np.ndarray, hold: int = 30) -> list[tuple[float, float, float]]:
    """``(s, |v|, v . e)`` for each ``s`` in :data:`SWEEP`: the command ``v`` at ``obs (24,)`` with the goal
    offset set to ``s e`` (``e`` its unit direction), from a fresh state after ``hold`` steps of that
    observation."""
    offset = obs[GOAL_OFFSET]
    e = offset / max(float(np.linalg.norm(offset)), 1e-9)
    x = torch.as_tensor(obs[:14], dtype=torch.float64)[None]
    dyn = tuple(t.expand(hold, *t.shape[1:])[None] for t in model_terms(env.unwrapped.model, x, "task"))
    out = []
    with recording(policy) as seen, torch.no_grad():
        for s in SWEEP:
            o = obs.copy()
            o[GOAL_OFFSET] = s * e
            policy(torch.as_tensor(np.tile(o, (hold, 1)), dtype=torch.float32)[None], dyn=dyn)
            v = seen["v"][0, -1]
            out.append((s, float(np.linalg.norm(v)), float(v @ e)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--policy", required=True, help="a checkpoint trained with --prior task on ArmReach")
    ap.add_argument("--seed", type=int, default=2_000_000, help="first seed")
    ap.add_argument("--episodes", type=int, default=12, help="episodes")
    ap.add_argument("--late", type=int, default=150, help="summarise failed episodes' steps from this one on")
    ap.add_argument("--sweep", action="store_true", help="sweep each failure's goal offset (see above)")
    ap.add_argument("--json", help="write the summary here")
    ap.add_argument("--expert-gain", type=float, default=ArmReachExpert().gain,
                    help="the labelling expert's gain (1/s; default %(default)s; 4 in earlier releases)")  # fmt: skip
    args = ap.parse_args()
    torch.set_num_threads(1)
    policy = load_arm_task_policy(args.policy)
    env, expert = gym.make(ARM), ArmReachExpert(gain=args.expert_gain)
    late, sweeps = [], {}
    for seed in range(args.seed, args.seed + args.episodes):
        success, rows, last = trace(policy, env, seed, expert)
        if success:
            continue
        print(f"seed {seed}: failed, final distance {rows[-1, 0]:.3f} m, closest {rows[:, 0].min():.3f} m")
        for t in range(0, len(rows), 25):
            d, v, label, along = rows[t]
            print(f"  step {t:3d}  distance {d:.3f}  |v| {v:.3f}  |label| {label:.3f}  v along label {along:+.3f}")
        late.append(rows[args.late :])
        if args.sweep:
            sweeps[seed] = sweep(policy, env, last)
            for s, speed, along in sweeps[seed]:
                print(f"  target moved to {s:.2f} m: |v| {speed:.3f}  v towards it {along:+.3f}")
    summary = {"policy": args.policy, "seeds": [args.seed, args.seed + args.episodes], "failed": len(late)}
    if late:
        steps = np.concatenate(late)
        summary.update(late_steps=len(steps), mean_distance=float(steps[:, 0].mean()),
                       mean_speed=float(steps[:, 1].mean()), mean_label_speed=float(steps[:, 2].mean()))  # fmt: skip
    if sweeps:
        summary["sweep"] = {
            seed: [{"offset": o, "speed": v, "towards": t} for o, v, t in found] for seed, found in sweeps.items()
        }
    print(json.dumps(summary, indent=1))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(summary, fh, indent=1)


if __name__ == "__main__":
    main()
