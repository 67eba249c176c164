"""Behaviour-cloning probe: can a policy variant fit expert demonstrations and close the loop?

Trains on demonstrations from ``safeliquid collect`` (no DAgger, no checkpoint selection) with the
training loss (:func:`safeliquid.train.imitation.loss_on`) and cosine learning rate, then runs closed-loop
episodes on seeds 1,000,000+. A quick way to compare architectures or options before a full ``train``.

    safeliquid collect --env safeliquid/CartPoleRail-v0 --episodes 120 --out runs/cart_demos.pt
    python benchmarks/probes/probe_bc.py --demos runs/cart_demos.pt --env safeliquid/CartPoleRail-v0 --cell-dt 3
"""

from __future__ import annotations

import argparse
import json
import time

import gymnasium as gym
import numpy as np
import torch

import safeliquid.envs  # noqa: F401 - registers the environments
from safeliquid.policies import LiquidBarrierPolicy, save_policy
from safeliquid.train.data import load_episodes, make_batch
from safeliquid.train.imitation import TrainConfig, gradient_step, learning_rate
from safeliquid.train.run_log import evaluate_policy
from safeliquid.train.run_options import policy_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demos", required=True, help="demonstrations from `safeliquid collect`")
    parser.add_argument("--env", required=True, help="environment id")
    parser.add_argument("--cell", default="ltc", help="cell name")
    parser.add_argument("--units", type=int, default=19, help="neurons")
    parser.add_argument("--cell-dt", type=float, help="ODE time per control step (default: the env's dt)")
    parser.add_argument("--safety", default="barrier", help="safety mode")
    parser.add_argument("--prior", choices=("accel", "velocity", "task"), help="the command prior (default: none)")
    parser.add_argument("--prior-bound", type=float, help="bound on the commanded quantity (needed with --prior)")
    parser.add_argument("--task-bound", type=float, default=1.0, help="task prior: bound on the task velocity")
    parser.add_argument("--updates", type=int, default=600, help="gradient updates of 16 episodes")
    parser.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate (cosine decay to a tenth)")
    parser.add_argument("--episodes", type=int, default=10, help="closed-loop episodes")
    parser.add_argument("--skip", action="store_true", help="a linear path from the encoded observation to the outputs")
    parser.add_argument("--save", help="also write the trained policy's checkpoint here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    episodes, _ = load_episodes(args.demos)
    cfg = TrainConfig(env_id=args.env, cell=args.cell, units=args.units, cell_dt=args.cell_dt, safety=args.safety,
                      prior=args.prior, prior_bound=args.prior_bound, task_bound=args.task_bound,
                      skip=args.skip, lr=args.lr, updates=args.updates)  # fmt: skip
    env = gym.make(cfg.env_id)
    pcfg = policy_config(cfg, env, [n for e in episodes for n in e.names])
    env.close()
    policy = LiquidBarrierPolicy(pcfg)
    obs = np.concatenate([e.obs for e in episodes])
    policy.set_normalization(obs.mean(0), obs.std(0))
    optim = torch.optim.Adam(policy.parameters(), lr=args.lr)
    rng, t0 = np.random.default_rng(0), time.perf_counter()
    for update in range(args.updates):
        pick = rng.choice(len(episodes), 16, replace=False)
        batch = make_batch([episodes[i] for i in pick], pcfg.gain_groups)
        stats = gradient_step(policy, optim, batch, learning_rate(cfg, update))
        if update % 100 == 0 or update == args.updates - 1:
            print(f"update {update}: loss {stats['loss']:.4f}", flush=True)
    policy.eval()
    if args.save:
        save_policy(policy, args.save, {"probe": vars(args)})
    m = evaluate_policy(policy, cfg.env_id, args.episodes)
    keys = ("success_rate", "violating_steps", "slack_steps", "EpRet", "EpLen", "mean_intervention")
    print(json.dumps({"args": vars(args), "loss": stats["loss"], "train_s": time.perf_counter() - t0,
                      **{k: m[k] for k in keys}}))  # fmt: skip


if __name__ == "__main__":
    main()
