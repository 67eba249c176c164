"""Reinforcement learning through the barrier layer against the usual answers, on one environment.

Methods (the same 19-neuron LTC network throughout):

- ``barrier``: recurrent PPO (:mod:`safeliquid.train.ppo`) with the layer in the loop and the class-K gains in
  PPO's action (this library's answer), then a refinement stage from its best checkpoint with a smaller
  exploration noise (``--init``, the recipe's second command);
- ``filter``: the same PPO with the layer at the environment's fixed default gains (a shield);
- ``none``: the same PPO without a layer;
- ``lagrangian``: no layer, PPO-Lagrangian with a small cost limit (the usual safe-RL answer);
- ``sac_layer``: SAC (:mod:`safeliquid.train.sac`) whose actor's gradient flows through the QP;
- ``sac_shield``: the same SAC with the layer as a shield only (no gradient through it): the ablation.

Each method's run goes to ``runs/bench_rl/<env>/<method>`` and resumes there (``--fresh`` starts over); its
best checkpoint is evaluated on ``--episodes`` held-out episodes (seeds from 2,000,000) and the result is kept
in the run folder, so methods can run in separate processes (``--methods``) and a last call with every method
gathers them. Also measured in that call: stable-baselines3's PPO with an MLP behind
:class:`~safeliquid.safety.SafetyFilterWrapper` (steps/s, the throughput peer) and this library's PPO alone on
the same environment for the same number of steps.

Writes ``benchmarks/results/rl_<env>.json`` and two plots under ``docs/assets/``: cumulative violating training
steps and training return against environment steps, every method on each.

    python benchmarks/bench_rl.py --env safeliquid/Navigate-v0
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from _util import write

import safeliquid.envs  # noqa: F401 - registers the environments
from safeliquid import load_policy
from safeliquid.cli_options import HELD_OUT_SEED
from safeliquid.policies import shipped
from safeliquid.safety import SafetyFilterWrapper
from safeliquid.train.acting import init_options
from safeliquid.train.ppo import PPOConfig, train_ppo
from safeliquid.train.run_log import evaluate_policy
from safeliquid.train.sac import SACConfig, train_sac

ROOT = Path(__file__).resolve().parent.parent
# The recipe of each environment: the options every method shares, PPO's, the refinement's and SAC's.
RECIPES: dict[str, dict[str, dict[str, Any]]] = {
    "safeliquid/Navigate-v0": {
        "shared": {"cell_dt": 1.0, "env_kwargs": {"goal_bonus": 2.0}},
        "ppo": {"total_steps": 2_000_000, "num_envs": 16, "rollout_steps": 64, "minibatches": 2,
                "eval_every": 100_000, "eval_episodes": 20},
        "refine": {"init_std": 0.2, "lr": 1e-4, "total_steps": 400_000, "eval_every": 50_000, "eval_episodes": 50},
        "baseline_steps": {"total_steps": 500_000},
        "sac": {"total_steps": 200_000, "utd": 0.125, "eval_every": 50_000, "eval_episodes": 20},
    },
    # ArmReach: PPO fine-tunes the shipped imitation policy (its network options come from the checkpoint).
    "safeliquid/ArmReach-v0": {
        "shared": {},
        "finetune": {"init_std": 0.1, "lr": 3e-5, "total_steps": 100_000, "num_envs": 8, "rollout_steps": 64,
                     "minibatches": 2, "eval_every": 25_000, "eval_episodes": 50},
        "methods": ["finetune"],
    },
    # CartPoleRail: at cell_dt 1 the LTC did not learn to balance by PPO (eval success 0 at 900k steps), as in
    # imitation (docs/training.md); the imitation recipe's 3 is used. Without the intervention penalty PPO stayed
    # at 0 success for 670k steps with the layer overriding most of the command; SAC learnt it in 100k.
    "safeliquid/CartPoleRail-v0": {
        "shared": {"cell_dt": 3.0},
        "ppo": {"total_steps": 3_000_000, "num_envs": 16, "rollout_steps": 64, "minibatches": 2,
                "intervention_penalty": 1.0, "eval_every": 100_000, "eval_episodes": 20},
        "baseline_steps": {"total_steps": 500_000},
        "sac": {"total_steps": 150_000, "utd": 0.25, "eval_every": 25_000, "eval_episodes": 20},
    },
}  # fmt: skip
METHODS = {
    "barrier": ("ppo", {"safety": "barrier"}),
    "filter": ("ppo", {"safety": "filter"}),
    "none": ("ppo", {"safety": "none"}),
    "lagrangian": ("ppo", {"safety": "none", "cost_limit": 1.0}),
    "sac_layer": ("sac", {"safety": "barrier", "gradient": "layer"}),
    "sac_shield": ("sac", {"safety": "barrier", "gradient": "shield"}),
    "finetune": ("ppo", {"safety": "barrier"}),
}
FROM_SCRATCH = [m for m in METHODS if m != "finetune"]


def _curve(out: Path) -> dict[str, list[float]]:
    with open(out / "progress.csv") as fh:
        rows = list(csv.DictReader(fh))

    def num(r: dict[str, str], key: str) -> float:
        return float(r[key]) if r.get(key) else float("nan")

    return {
        "env_steps": [int(r["env_steps"]) for r in rows],
        "train_violating_steps": [int(float(r["train_train_violating_steps"])) for r in rows],
        "train_EpRet": [num(r, "train_EpRet") for r in rows],
        "steps_per_s": [num(r, "train_steps_per_s") for r in rows],
        "wall_s": [num(r, "wall_s") for r in rows],
    }


def _folder(root: Path, method: str, seed: int) -> Path:
    """Seed 0's run of ``method`` is ``root/method`` (the recipe's), another seed's ``root/method_seed<k>``."""
    return root / (method if seed == 0 else f"{method}_seed{seed}")


def _stages(env_id: str, method: str, root: Path, seed: int = 0) -> list[tuple[Any, Any, Path]]:
    """The runs of ``method`` with training seed ``seed``: ``(train function, config, folder)``, in order."""
    recipe = RECIPES[env_id]
    algo, opts = METHODS[method]
    out = _folder(root, method, seed)
    opts = {**opts, "seed": seed}
    if method == "finetune":
        init = str(shipped(env_id))
        cfg = PPOConfig(**{**init_options(init), **recipe["finetune"], **opts, "init": init, "out": str(out)})
        return [(train_ppo, cfg, out)]
    if algo == "sac":
        cfg = SACConfig(env_id=env_id, **recipe["shared"], **recipe["sac"], **opts, out=str(out))
        return [(train_sac, cfg, out)]
    steps = recipe["ppo"] if method == "barrier" else {**recipe["ppo"], **recipe["baseline_steps"]}
    cfg = PPOConfig(env_id=env_id, **recipe["shared"], **steps, **opts, out=str(out))
    stages = [(train_ppo, cfg, out)]
    if method == "barrier" and "refine" in recipe:
        refined = _folder(root, "barrier_refine", seed)
        stages.append((train_ppo, replace(cfg, **recipe["refine"], init=str(out / "best.pt"), out=str(refined)),
                       refined))  # fmt: skip
    return stages


def run_method(env_id: str, method: str, root: Path, episodes: int, fresh: bool, seed: int = 0) -> dict[str, Any]:
    """Train ``method`` with ``seed`` (resuming), evaluate its final best checkpoint on held-out episodes once,
    and return (and keep in its folder) the result."""
    stages = _stages(env_id, method, root, seed)
    done = stages[-1][2] / "bench_result.json"
    if fresh:
        for _, _, out in stages:
            shutil.rmtree(out, ignore_errors=True)
    if done.exists():
        return json.loads(done.read_text())
    for train, cfg, _ in stages:
        train(cfg, resume=True)
    curves = [_curve(out) for _, _, out in stages]
    offset = curves[0]["env_steps"][-1]
    curve = curves[0]
    for extra in curves[1:]:  # a later stage continues the plot and the violation count of the first
        curve = {
            "env_steps": curve["env_steps"] + [s + offset for s in extra["env_steps"]],
            "train_violating_steps": curve["train_violating_steps"]
            + [v + curve["train_violating_steps"][-1] for v in extra["train_violating_steps"]],
            "train_EpRet": curve["train_EpRet"] + extra["train_EpRet"],
            "steps_per_s": curve["steps_per_s"] + extra["steps_per_s"],
            "wall_s": curve["wall_s"] + [w + curve["wall_s"][-1] for w in extra["wall_s"]],
        }
    policy = load_policy(stages[-1][2] / "best.pt")
    held_out = evaluate_policy(policy, env_id, episodes, first_seed=HELD_OUT_SEED)
    result = {
        "algo": METHODS[method][0],
        "seed": seed,
        "options": METHODS[method][1],
        "train_steps": curve["env_steps"][-1],
        "train_violating_steps": curve["train_violating_steps"][-1],
        "train_wall_s": curve["wall_s"][-1],
        "steps_per_s_median": float(np.nanmedian(curve["steps_per_s"])),
        "held_out": {k: v for k, v in held_out.items() if not isinstance(v, tuple)},
        "held_out_success_ci": list(held_out["success_rate_ci"]),
        "curve": curve,
    }
    done.write_text(json.dumps(result))
    return result


def other_seeds(env_id: str, root: Path, results: dict[str, dict[str, Any]]) -> dict[str, dict[str, list]]:
    """Per method with runs of more seeds than 0 (``--seeds``, cached in ``<method>_seed<k>``): every seed's
    held-out success, its interval and training violating steps, seed 0's first."""
    table: dict[str, dict[str, list]] = {}
    for method, first in results.items():
        rows = [first]
        for folder in sorted(root.glob(f"{method}_seed*")):
            seed = int(folder.name.rsplit("_seed", 1)[1])
            done = _stages(env_id, method, root, seed)[-1][2] / "bench_result.json"
            if done.exists():
                rows.append(json.loads(done.read_text()))
        if len(rows) > 1:
            table[method] = {
                "seed": [r.get("seed", 0) for r in rows],
                "held_out_success": [r["held_out"]["success_rate"] for r in rows],
                "held_out_success_ci": [r["held_out_success_ci"] for r in rows],
                "train_violating_steps": [r["train_violating_steps"] for r in rows],
            }
    return table


def throughput(env_id: str, steps: int) -> dict[str, float]:
    """Environment steps per second of learning, updates included, in this process one after the other:
    stable-baselines3 PPO (MLP, default settings) behind SafetyFilterWrapper, and this library's PPO (LTC and
    the layer in the loop, the recipe's vector envs)."""
    from stable_baselines3 import PPO

    env = SafetyFilterWrapper(gym.make(env_id))
    model = PPO("MlpPolicy", env, seed=0, device="cpu", verbose=0)
    t0 = time.perf_counter()
    model.learn(total_timesteps=steps)
    sb3 = steps / (time.perf_counter() - t0)
    env.close()
    recipe = RECIPES[env_id]
    out = ROOT / "runs" / "bench_rl" / "throughput"
    shutil.rmtree(out, ignore_errors=True)
    cfg = PPOConfig(env_id=env_id, **recipe["shared"], **{**recipe["ppo"], "total_steps": steps,
                    "eval_every": 10**9, "eval_episodes": 1}, out=str(out))  # fmt: skip
    t0 = time.perf_counter()
    train_ppo(cfg, resume=False)
    ours = steps / (time.perf_counter() - t0)
    shutil.rmtree(out, ignore_errors=True)
    return {"sb3_ppo_mlp_filter_steps_per_s": sb3, "safeliquid_ppo_ltc_barrier_steps_per_s": ours,
            "ratio": ours / sb3, "steps": steps}  # fmt: skip


def _plot(env_id: str, results: dict[str, dict[str, Any]]) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    name = env_id.split("/")[-1].split("-")[0].lower()
    paths = []
    for key, label in (("train_violating_steps", "violating training steps (cumulative)"),
                       ("train_EpRet", "training return (last 50 episodes)")):  # fmt: skip
        fig, ax = plt.subplots(figsize=(6.4, 3.8))
        for method, r in results.items():
            ax.plot(r["curve"]["env_steps"], r["curve"][key], label=method)
        ax.set_xlabel("environment steps")
        ax.set_ylabel(label)
        if key == "train_violating_steps":
            ax.set_yscale("symlog")
        else:  # linear within +-100; beyond, logarithmic (an unshielded cart-pole leaves its rail: returns ~ -1e5)
            ax.set_yscale("symlog", linthresh=100)
        ax.set_title(env_id)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = ROOT / "docs" / "assets" / f"rl_{name}_{key.split('_')[-1].lower()}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(str(path.relative_to(ROOT)))
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="safeliquid/Navigate-v0", choices=list(RECIPES), help="environment id")
    parser.add_argument("--methods", nargs="+", choices=list(METHODS),
                        help="methods to run (default: the environment's); with all of them the results are "
                        "gathered and written")  # fmt: skip
    parser.add_argument("--episodes", type=int, default=200, help="held-out evaluation episodes")
    parser.add_argument("--throughput-steps", type=int, default=16_384, help="steps of each throughput run")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0],
                        help="training seeds to run the methods with; seed 0 is the recipe's run, the others' "
                        "results are gathered beside it")  # fmt: skip
    parser.add_argument("--fresh", action="store_true", help="start the methods' runs over")
    args = parser.parse_args()
    root = ROOT / "runs" / "bench_rl" / args.env.split("/")[-1]
    every = RECIPES[args.env].get("methods", FROM_SCRATCH)
    methods = args.methods or every
    if set(methods) - set(every):
        parser.error(f"--methods {sorted(set(methods) - set(every))} are not run on {args.env}; it runs {every}")
    results = {}
    for method in methods:
        for seed in args.seeds:
            r = run_method(args.env, method, root, args.episodes, args.fresh, seed)
            if seed == 0:
                results[method] = r
            print(
                f"{method} (seed {seed}): held-out success {r['held_out']['success_rate']:.3f}, training violating "
                f"steps {r['train_violating_steps']} in {r['train_steps']} steps, {r['train_wall_s'] / 60:.1f} min"
            )
    if set(methods) != set(every) or 0 not in args.seeds:
        return
    speed = throughput(args.env, args.throughput_steps) if "ppo" in RECIPES[args.env] else None
    plots = _plot(args.env, results)
    seeds = other_seeds(args.env, root, results)
    payload = {"env": args.env, "recipe": RECIPES[args.env], "methods": results, "seeds": seeds,
               "throughput": speed, "plots": plots}  # fmt: skip
    path = write(f"rl_{args.env.split('/')[-1].split('-')[0].lower()}", payload)
    if speed is not None:
        print(
            f"throughput: ours {speed['safeliquid_ppo_ltc_barrier_steps_per_s']:.0f} steps/s, stable-baselines3 "
            f"{speed['sb3_ppo_mlp_filter_steps_per_s']:.0f} steps/s ({speed['ratio']:.2f}x)"
        )
    for method, row in seeds.items():
        print(f"{method}, seeds {row['seed']}: held-out success {row['held_out_success']}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
