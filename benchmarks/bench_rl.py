"""Reinforcement learning through the barrier layer against the usual answers, on one environment.

Methods (the same 19-neuron LTC network and recurrent PPO, :mod:`safeliquid.train.ppo`):

- ``barrier``: the layer in the loop with the gains in PPO's action (this library's answer);
- ``filter``: the layer with the environment's fixed default gains (a shield);
- ``none``: no layer (plain PPO);
- ``lagrangian``: no layer, PPO-Lagrangian with a small cost limit (the usual safe-RL answer).

Each trains from scratch for ``--steps`` environment steps; its best checkpoint is then evaluated on
``--episodes`` held-out episodes (seeds from 2,000,000). Also timed in the same run: stable-baselines3's PPO
with an MLP behind :class:`~safeliquid.safety.SafetyFilterWrapper` (steps/s, the throughput peer).

Writes ``benchmarks/results/rl_<env>.json`` and two plots under ``docs/assets/``: cumulative violating training
steps and training return, both against environment steps, every method on each. Runs go to
``runs/bench_rl/<env>/<method>`` and resume there (``--fresh`` to start over).

    python benchmarks/bench_rl.py --env safeliquid/Navigate-v0 --steps 400000
"""

from __future__ import annotations

import argparse
import csv
import time
from dataclasses import replace
from pathlib import Path

import gymnasium as gym
import numpy as np
from _util import write

import safeliquid.envs  # noqa: F401 - registers the environments
from safeliquid import load_policy
from safeliquid.cli_options import HELD_OUT_SEED
from safeliquid.safety import SafetyFilterWrapper
from safeliquid.train.ppo import PPOConfig, train_ppo
from safeliquid.train.run_log import evaluate_policy

ROOT = Path(__file__).resolve().parent.parent
METHODS = {
    "barrier": {"safety": "barrier"},
    "filter": {"safety": "filter"},
    "none": {"safety": "none"},
    "lagrangian": {"safety": "none", "cost_limit": 1.0},
}


def _curve(out: Path) -> dict[str, list[float]]:
    with open(out / "progress.csv") as fh:
        rows = list(csv.DictReader(fh))
    return {
        "env_steps": [int(r["env_steps"]) for r in rows],
        "train_violating_steps": [int(float(r["train_train_violating_steps"])) for r in rows],
        "train_EpRet": [float(r["train_EpRet"]) if r["train_EpRet"] else float("nan") for r in rows],
        "steps_per_s": [float(r["train_steps_per_s"]) for r in rows],
        "wall_s": [float(r["wall_s"]) for r in rows],
    }


def sb3_rate(env_id: str, steps: int) -> float:
    """stable-baselines3 PPO (MLP, default settings) behind SafetyFilterWrapper: environment steps per second
    of ``learn``, updates included."""
    from stable_baselines3 import PPO

    env = SafetyFilterWrapper(gym.make(env_id))
    model = PPO("MlpPolicy", env, seed=0, device="cpu", verbose=0)
    t0 = time.perf_counter()
    model.learn(total_timesteps=steps)
    rate = steps / (time.perf_counter() - t0)
    env.close()
    return rate


def _plot(env_id: str, curves: dict[str, dict[str, list[float]]]) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    name = env_id.split("/")[-1].split("-")[0].lower()
    paths = []
    for key, label in (("train_violating_steps", "violating training steps (cumulative)"),
                       ("train_EpRet", "training return (last 50 episodes)")):  # fmt: skip
        fig, ax = plt.subplots(figsize=(6, 3.6))
        for method, c in curves.items():
            ax.plot(c["env_steps"], c[key], label=method)
        ax.set_xlabel("environment steps")
        ax.set_ylabel(label)
        ax.set_title(env_id)
        ax.legend()
        fig.tight_layout()
        path = ROOT / "docs" / "assets" / f"rl_{name}_{key.split('_')[-1].lower()}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(str(path.relative_to(ROOT)))
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="safeliquid/Navigate-v0", help="environment id")
    parser.add_argument("--steps", type=int, default=400_000, help="training steps per method")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS), help="methods")
    parser.add_argument("--episodes", type=int, default=200, help="held-out evaluation episodes")
    parser.add_argument("--sb3-steps", type=int, default=8192, help="steps of the stable-baselines3 peer")
    parser.add_argument("--fresh", action="store_true", help="start every run over")
    args = parser.parse_args()
    base = PPOConfig(env_id=args.env, total_steps=args.steps, num_envs=16, rollout_steps=64, minibatches=2,
                     eval_every=50_000, eval_episodes=10)  # fmt: skip
    results, curves = {}, {}
    for method in args.methods:
        out = ROOT / "runs" / "bench_rl" / args.env.split("/")[-1] / method
        cfg = replace(base, out=str(out), **METHODS[method])
        train_ppo(cfg, resume=not args.fresh)
        curves[method] = c = _curve(out)
        policy = load_policy(out / "best.pt")
        held_out = evaluate_policy(policy, args.env, args.episodes, first_seed=HELD_OUT_SEED)
        results[method] = {
            "config": {k: v for k, v in METHODS[method].items()},
            "train_violating_steps": c["train_violating_steps"][-1],
            "train_wall_s": c["wall_s"][-1],
            "steps_per_s_median": float(np.median(c["steps_per_s"])),
            "held_out": {k: v for k, v in held_out.items() if not isinstance(v, tuple)},
        }
        print(f"{method}: success {held_out['success_rate']:.3f}, training violating steps "
              f"{c['train_violating_steps'][-1]}, {c['wall_s'][-1] / 60:.1f} min")  # fmt: skip
    sb3 = sb3_rate(args.env, args.sb3_steps)
    plots = _plot(args.env, curves)
    payload = {"env": args.env, "steps": args.steps, "methods": results, "curves": curves,
               "sb3_ppo_mlp_filter_steps_per_s": sb3, "plots": plots}  # fmt: skip
    path = write(f"rl_{args.env.split('/')[-1].split('-')[0].lower()}", payload)
    print(f"stable-baselines3 PPO (MLP) behind SafetyFilterWrapper: {sb3:.0f} steps/s; wrote {path}")


if __name__ == "__main__":
    main()
