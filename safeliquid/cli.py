"""The ``safeliquid`` command line: collect, train, eval, rollout, demo, bench, explain, study.

Every command takes ``--env`` and ``--seed``; ``safeliquid <command> --help`` lists
all options with their help and defaults. The options are declared once, in
:mod:`safeliquid.cli_options` and :class:`~safeliquid.train.imitation.TrainConfig`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import safeliquid.envs  # noqa: F401 - registers the environments
from safeliquid.cli_options import (
    BenchOptions,
    CollectOptions,
    ControllerOptions,
    DemoOptions,
    EnvOptions,
    EvalOptions,
    ExplainOptions,
    RolloutOptions,
)
from safeliquid.envs.experts import make_expert
from safeliquid.options import add_arguments, from_args, reject_foreign
from safeliquid.policies import load_policy, shipped
from safeliquid.train.acting import init_options
from safeliquid.train.data import collect, save_episodes
from safeliquid.train.explain import explain
from safeliquid.train.imitation import TrainConfig, train
from safeliquid.train.plots import plot_rollout, write_gif
from safeliquid.train.ppo import PPOConfig, train_ppo
from safeliquid.train.rollout import ExpertController, PolicyController, evaluate, run_episode
from safeliquid.train.sac import SACConfig, train_sac
from safeliquid.train.study import QUICK, StudyConfig, command_line, run_study
from safeliquid.train.study_report import write_report


def _controller(opts: ControllerOptions, env: Any) -> tuple[Any, str]:
    """A policy controller (``--policy``, else the shipped one) or the expert (``--expert``), checked against
    ``env``."""
    if opts.expert:
        return ExpertController(make_expert(opts.env)), "expert"
    policy = _load(opts)
    check_policy_fits(policy, env)
    if opts.run_safety:
        policy.run_safety = opts.run_safety
    return PolicyController(policy), f"{policy.config.cell}/{policy.run_safety}"


def _load(opts: ControllerOptions | BenchOptions) -> Any:
    return load_policy(opts.policy or shipped(opts.env))


def check_policy_fits(policy: Any, env: Any) -> None:
    """Raise before the first step if the policy was built for other spaces than ``env``'s."""
    c = policy.config
    obs, act = env.observation_space.shape, env.action_space.shape
    if (c.obs_dim,) != obs or (c.act_dim,) != act:
        raise SystemExit(
            f"error: the policy was trained on {c.env_id} (observation ({c.obs_dim},), action ({c.act_dim},)); "
            f"this environment has observation {obs} and action {act}"
        )


def _make_env(opts: EnvOptions, render: bool = False) -> Any:
    import gymnasium as gym

    kw: dict[str, Any] = {}
    for name in ("obs_noise", "disturbance"):
        if getattr(opts, name, 0.0):
            kw[name] = getattr(opts, name)
    if render:
        kw["render_mode"] = "rgb_array"
    return gym.make(opts.env, **kw)


def _evaluate(opts: ControllerOptions, env: Any, episodes: int, label: str = "") -> dict[str, Any]:
    """Aggregated metrics of ``episodes`` seeded episodes, with the per-episode ones under ``per_episode``."""
    ctrl, name = _controller(opts, env)
    metrics = evaluate(env, ctrl, episodes, opts.seed, desc=f"eval {label or name}", per_episode=True)
    return {"controller": label or name, **metrics}


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """Metrics of several controllers side by side (one column each)."""
    keys = [
        ("success_rate", "success rate", "{:.3f}"),
        ("failure_rate", "failure rate (episodes with a violation)", "{:.3f}"),
        ("cost_rate", "cost rate (per step)", "{:.4f}"),
        ("EpCost", "EpCost (mean)", "{:.2f}"),
        ("violating_steps", "violating steps (total)", "{}"),
        ("unguarded_contacts", "contacts with every h >= 0 (constraint gaps)", "{}"),
        ("deepest_violation", "deepest violation (min h < 0)", "{:.4f}"),
        ("min_barrier", "minimum barrier value", "{:.4f}"),
        ("EpRet", "EpRet (mean)", "{:.2f}"),
        ("EpLen", "EpLen (mean)", "{:.1f}"),
        ("mean_intervention", "mean intervention |u - u_raw|", "{:.3f}"),
        ("max_intervention", "max intervention", "{:.3f}"),
        ("slack_steps", "steps with QP slack", "{}"),
        ("solver_failures", "solver failures", "{}"),
        ("fallback_steps", "steps on the layer's fallback", "{}"),
        ("mean_step_ms", "compute per step (ms, mean)", "{:.3f}"),
        ("p99_step_ms", "compute per step (ms, worst p99)", "{:.3f}"),
    ]
    head = "| metric | " + " | ".join(r["controller"] for r in rows) + " |"
    lines = [head, "|---|" + "---|" * len(rows)]
    for key, label, fmt in keys:
        cells = []
        for r in rows:
            value = fmt.format(r[key])
            if f"{key}_ci" in r:
                lo, hi = r[f"{key}_ci"]
                value += f" [{lo:.3f}, {hi:.3f}]"
            cells.append(value)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# -- commands -------------------------------------------------------------------------------------
def cmd_collect(opts: CollectOptions) -> None:
    from tqdm import tqdm

    seeds = [opts.seed + i for i in range(opts.episodes)]
    with tqdm(total=len(seeds), desc="expert demos") as bar:
        episodes = collect(opts.env, seeds, opts.workers, progress=bar)
    save_episodes(episodes, opts.out, {"env_id": opts.env, "seed": opts.seed})
    steps = sum(len(e.obs) for e in episodes)
    ok = np.mean([e.success for e in episodes])
    print(f"{len(episodes)} episodes, {steps} steps, expert success {ok:.3f} -> {opts.out}")


def cmd_train(cfg: TrainConfig | PPOConfig | SACConfig, fresh: bool = False) -> None:
    t0 = time.perf_counter()
    run_algo = {PPOConfig: train_ppo, SACConfig: train_sac}.get(type(cfg), train)
    last = run_algo(cfg, resume=not fresh)
    print(json.dumps({k: v for k, v in last.items()}, indent=1, default=float))
    print(f"done in {time.perf_counter() - t0:.0f} s; best checkpoint: {Path(cfg.out) / 'best.pt'}")


def _write(path: str, text: str) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(text)


def cmd_eval(opts: EvalOptions) -> None:
    env = _make_env(opts)
    rows = [_evaluate(opts, env, opts.episodes)]
    env.close()
    table = markdown_table(rows)
    print(table)
    if opts.json:
        _write(opts.json, json.dumps(rows, indent=2, default=float))
    if opts.markdown:
        _write(opts.markdown, table + "\n")


def cmd_rollout(opts: RolloutOptions) -> None:
    env = _make_env(opts, render=True)
    ctrl, name = _controller(opts, env)
    metrics, trace = run_episode(env, ctrl, opts.seed, trace=True, render_every=opts.frame_every)
    out = Path(opts.out)
    assert trace is not None
    gif = write_gif(trace.frames, out / f"rollout.{opts.format}", opts.frame_every * env.unwrapped.dt)
    png = plot_rollout(trace, env, out / "rollout.png", f"{opts.env} seed {opts.seed} — {name}")
    env.close()
    print(
        f"{name}: success {metrics.success}, EpCost {metrics.ep_cost:.0f}, min h {metrics.min_barrier:.4f} "
        f"-> {gif}, {png}"
    )


def cmd_demo(opts: DemoOptions) -> None:
    """The shipped Navigate policy with and without its barrier layer, side by side; a GIF and plots."""
    t0 = time.perf_counter()
    out = Path(opts.out)
    env = _make_env(opts)
    rows = []
    modes = (("barrier", "LTC + BarrierNet"), ("none", "LTC, barrier layer off"))
    for mode, label in modes:
        rows.append(_evaluate(dataclasses.replace(opts, run_safety=mode), env, opts.episodes, label))
    env.close()
    table = markdown_table(rows)
    print(f"\n{opts.env}: shipped policy, {opts.episodes} held-out seeded episodes (seeds {opts.seed}...)\n")
    print(table)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.md").write_text(table + "\n")
    (out / "metrics.json").write_text(json.dumps(rows, indent=2, default=float))
    env = _make_env(opts, render=True)
    for mode, _ in modes:
        ctrl, name = _controller(dataclasses.replace(opts, run_safety=mode), env)
        _, trace = run_episode(env, ctrl, opts.seed, trace=True, render_every=2)
        assert trace is not None
        write_gif(trace.frames, out / f"rollout_{mode}.gif", 2 * env.unwrapped.dt)
        plot_rollout(trace, env, out / f"rollout_{mode}.png", f"{opts.env} seed {opts.seed} — {name}")
    env.close()
    print(f"\nwrote {out}/metrics.md, metrics.json, rollout_barrier.gif/.png, rollout_none.gif/.png")
    print(f"demo took {time.perf_counter() - t0:.0f} s")


def cmd_bench(opts: BenchOptions) -> None:
    """Control-step latency of a policy at batch 1 (policy + barrier layer), median and p99."""
    import torch

    torch.set_num_threads(1)
    env = _make_env(opts)
    policy = _load(opts)
    check_policy_fits(policy, env)
    obs, _ = env.reset(seed=opts.seed)
    base = env.unwrapped
    policy.reset()
    times = []
    for i in range(opts.steps):
        state = base.safety_state()
        t0 = time.perf_counter()
        action = policy.act(obs, state, base.constraints)
        times.append(time.perf_counter() - t0)
        obs, _, term, trunc, _ = env.step(action)
        if term or trunc:
            obs, _ = env.reset(seed=opts.seed + i + 1)
            policy.reset()
    env.close()
    us = np.asarray(times[20:]) * 1e6
    print(f"{opts.env} {policy.config.cell}/{policy.run_safety}: control step median {np.median(us):.0f} µs, "
          f"p99 {np.percentile(us, 99):.0f} µs over {len(us)} steps (batch 1, 1 thread)")  # fmt: skip


def cmd_explain(opts: ExplainOptions) -> None:
    """Neuron traces, saliency and decision trees of a policy (the shipped one by default) on ``--env``."""
    import torch

    torch.set_num_threads(1)
    policy = _load(opts)
    env = _make_env(opts)
    check_policy_fits(policy, env)
    env.close()
    r = explain(policy, opts.env, Path(opts.out), opts.seed, opts.episodes, opts.depth)
    print(f"{opts.env} {r['cell']}: {r['neurons']} neurons over {r['steps']} steps; decision trees: held-out R^2 "
          f"median {r['median_r2']:.2f}, concentration mean {r['mean_concentration']:.2f}")  # fmt: skip
    print(f"wrote {opts.out}/neurons.png, saliency.png, trees.md, explain.json")


def cmd_study(cfg: StudyConfig) -> None:
    """Train and measure the grid on Ray (resuming), gather it into ``<out>/study.json`` and write the page."""
    t0 = time.perf_counter()
    study = run_study(cfg)
    page = Path(cfg.page)
    write_report(study, page, page.parent / "results", command_line(cfg))
    print(f"{len(study['tasks'])} runs in {cfg.out}/study.json; wrote {page} and {page.parent / 'results'}/ "
          f"in {time.perf_counter() - t0:.0f} s")  # fmt: skip
    if study["failed"]:
        first = next(iter(study["failed"].items()))
        raise ValueError(f"{len(study['failed'])} study runs failed (first: {first[0]}: {first[1]}); re-run to retry")


# -- parser ---------------------------------------------------------------------------------------
ALGOS: dict[str, type] = {
    "dagger": TrainConfig,
    "ppo": PPOConfig,
    "sac": SACConfig,
}  # train --algo: the options of each
COMMANDS: dict[str, tuple[Callable[..., None], tuple[type, ...], str]] = {
    "collect": (cmd_collect, (CollectOptions,), "expert demonstrations"),
    "train": (
        cmd_train,
        tuple(ALGOS.values()),
        "train a policy through the layer: DAgger, PPO or SAC",
    ),
    "eval": (cmd_eval, (EvalOptions,), "seeded closed-loop evaluation, JSON and markdown"),
    "rollout": (cmd_rollout, (RolloutOptions,), "one episode as a GIF and plots"),
    "demo": (cmd_demo, (DemoOptions,), "the shipped Navigate policy with and without its barrier layer"),
    "bench": (cmd_bench, (BenchOptions,), "control-step latency of a policy (batch 1, 1 thread)"),
    "explain": (cmd_explain, (ExplainOptions,), "neuron traces, saliency and per-neuron decision trees of a policy"),
    "study": (cmd_study, (StudyConfig,), "the claims study: a grid of cells x modes x seeds on Ray, and its page"),
}


class _HelpWithDefaults(argparse.ArgumentDefaultsHelpFormatter):
    """Each option's help with its default, except a None default (the help says what happens then)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        return action.help if action.default is None else super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    """One subcommand per entry of :data:`COMMANDS`, its options generated from its options class."""
    fmt = _HelpWithDefaults
    parser = argparse.ArgumentParser(prog="safeliquid", description=__doc__.splitlines()[0], formatter_class=fmt)
    parser.add_argument("--debug", action="store_true", help="print the traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (_, classes, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text, formatter_class=fmt)
        if name == "train":
            p.add_argument("--algo", choices=tuple(ALGOS), default="dagger",
                           help="dagger: imitate the environment's expert; ppo: on-policy reinforcement learning; "
                           "sac: off-policy, the actor's gradient through the QP")  # fmt: skip
            add_arguments(p, *classes, labels=tuple(ALGOS))
            p.add_argument("--fresh", action="store_true", help="ignore an existing last.pt in --out")
        else:
            add_arguments(p, *classes, given_only=name == "study")  # study: --quick fills what is not given
    return parser


def run(args: argparse.Namespace) -> None:
    """Build the command's options from the parsed ``args`` (checking every value) and run it."""
    func, classes, _ = COMMANDS[args.command]
    if args.command == "train":
        cls = ALGOS[args.algo]
        reject_foreign(cls, args, classes, f"--algo {args.algo}")
        # Fine-tuning: the network options not given come from the checkpoint (a given one must match it).
        inherited = init_options(args.init) if getattr(args, "init", None) else {}
        func(from_args(cls, args, **{k: v for k, v in inherited.items() if not hasattr(args, k)}), fresh=args.fresh)
    elif args.command == "study" and getattr(args, "quick", False):
        func(from_args(StudyConfig, args, **{k: v for k, v in QUICK.items() if not hasattr(args, k)}))
    else:
        func(from_args(classes[0], args))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        run(args)
    except (ValueError, OSError) as err:  # user errors (bad values, files): one line, no traceback
        if args.debug:
            traceback.print_exc()
        print(f"error: {str(err).splitlines()[0] if str(err) else type(err).__name__}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
