"""The ``safeliquid`` command line: collect, train, eval, rollout, demo, bench.

Every command takes ``--env``, ``--seed`` and, where a policy is built,
``--cell`` and ``--safety``; ``safeliquid <command> --help`` lists all options
with their defaults.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

import safeliquid.envs  # noqa: F401 - registers the environments
from safeliquid.envs import check_env_id
from safeliquid.envs.experts import make_expert
from safeliquid.options import add_arguments, from_args
from safeliquid.policies import SAFETY_MODES, load_policy, shipped
from safeliquid.train.data import collect, save_episodes
from safeliquid.train.imitation import TrainConfig, train
from safeliquid.train.plots import plot_rollout, write_gif
from safeliquid.train.rollout import ExpertController, PolicyController, evaluate, run_episode

ENV_DEFAULT = "safeliquid/Navigate-v0"
HELD_OUT_SEED = 2_000_000  # eval/rollout/demo/bench seeds: training selects checkpoints on 1,000,000+


def _env_id(value: str) -> str:
    try:
        return check_env_id(value)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _at_least(low: int) -> Any:
    """An argparse type: an integer >= ``low``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {value}")
        return value

    parse.__name__ = f"integer >= {low}"
    return parse


def _non_negative(text: str) -> float:
    """An argparse type: a finite number >= 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (np.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text}")
    return value


def _writable(text: str) -> str:
    """An argparse type: a path a file can be written to (its folder is created), checked before the run."""
    path = Path(text)
    _creatable(path.parent, text)
    if path.is_dir() or not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise argparse.ArgumentTypeError(f"cannot write {text}")
    return text


def _creatable(folder: Path, text: str) -> None:
    """Create ``folder`` (and its parents) for the path ``text``, or raise naming what is in the way."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        blocker = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), None)
        reason = f"{blocker} is a file" if blocker is not None else err.strerror
        raise argparse.ArgumentTypeError(f"cannot write {text}: {reason}") from None


def _folder(text: str) -> str:
    """An argparse type: a folder that exists or can be created, and is writable."""
    path = Path(text)
    _creatable(path, text)
    if not os.access(path, os.W_OK):
        raise argparse.ArgumentTypeError(f"cannot write into the folder {text}")
    return text


def _controller(args: argparse.Namespace, env: Any) -> tuple[Any, str]:
    """A policy controller (``--policy``; ``--shipped``) or the expert (``--expert``), checked against ``env``."""
    if args.expert:
        return ExpertController(make_expert(args.env)), "expert"
    policy = _load(args)
    check_policy_fits(policy, env)
    if getattr(args, "run_safety", None):
        policy.run_safety = args.run_safety
    return PolicyController(policy), f"{policy.config.cell}/{policy.run_safety}"


def _load(args: argparse.Namespace) -> Any:
    path = args.policy or shipped(args.env)
    return load_policy(path)


def check_policy_fits(policy: Any, env: Any) -> None:
    """Raise before the first step if the policy was built for other spaces than ``env``'s."""
    c = policy.config
    obs, act = env.observation_space.shape, env.action_space.shape
    if (c.obs_dim,) != obs or (c.act_dim,) != act:
        raise SystemExit(
            f"error: the policy was trained on {c.env_id} (observation ({c.obs_dim},), action ({c.act_dim},)); "
            f"this environment has observation {obs} and action {act}"
        )


def _make_env(args: argparse.Namespace, render: bool = False) -> Any:
    import gymnasium as gym

    kw: dict[str, Any] = {}
    for name in ("obs_noise", "disturbance"):
        if getattr(args, name, 0.0):
            kw[name] = getattr(args, name)
    if render:
        kw["render_mode"] = "rgb_array"
    return gym.make(args.env, **kw)


def _evaluate(args: argparse.Namespace, env: Any, episodes: int, label: str = "") -> dict[str, Any]:
    """Aggregated metrics of ``episodes`` seeded episodes, with the per-episode ones under ``per_episode``."""
    ctrl, name = _controller(args, env)
    metrics = evaluate(env, ctrl, episodes, args.seed, desc=f"eval {label or name}", per_episode=True)
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
def cmd_collect(args: argparse.Namespace) -> None:
    from tqdm import tqdm

    seeds = [args.seed + i for i in range(args.episodes)]
    with tqdm(total=len(seeds), desc="expert demos") as bar:
        episodes = collect(args.env, seeds, args.workers, progress=bar)
    save_episodes(episodes, args.out, {"env_id": args.env, "seed": args.seed})
    steps = sum(len(e.obs) for e in episodes)
    ok = np.mean([e.success for e in episodes])
    print(f"{len(episodes)} episodes, {steps} steps, expert success {ok:.3f} -> {args.out}")


def cmd_train(args: argparse.Namespace) -> None:
    cfg = from_args(TrainConfig, args)
    t0 = time.perf_counter()
    last = train(cfg, resume=not args.fresh)
    print(json.dumps({k: v for k, v in last.items()}, indent=1, default=float))
    print(f"done in {time.perf_counter() - t0:.0f} s; best checkpoint: {Path(cfg.out) / 'best.pt'}")


def cmd_eval(args: argparse.Namespace) -> None:
    env = _make_env(args)
    rows = [_evaluate(args, env, args.episodes)]
    env.close()
    table = markdown_table(rows)
    print(table)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(rows, indent=2, default=float))
    if args.markdown:
        Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)
        Path(args.markdown).write_text(table + "\n")


def cmd_rollout(args: argparse.Namespace) -> None:
    env = _make_env(args, render=True)
    ctrl, name = _controller(args, env)
    metrics, trace = run_episode(env, ctrl, args.seed, trace=True, render_every=args.frame_every)
    out = Path(args.out)
    assert trace is not None
    gif = write_gif(trace.frames, out / f"rollout.{args.format}", args.frame_every * env.unwrapped.dt)
    png = plot_rollout(trace, env, out / "rollout.png", f"{args.env} seed {args.seed} — {name}")
    env.close()
    print(
        f"{name}: success {metrics.success}, EpCost {metrics.ep_cost:.0f}, min h {metrics.min_barrier:.4f} "
        f"-> {gif}, {png}"
    )


def cmd_demo(args: argparse.Namespace) -> None:
    """The shipped Navigate policy with and without its barrier layer, side by side; a GIF and plots."""
    t0 = time.perf_counter()
    out = Path(args.out)
    env = _make_env(args)
    rows = []
    for mode, label in (("barrier", "LTC + BarrierNet"), ("none", "LTC, barrier layer off")):
        args.run_safety = mode
        rows.append(_evaluate(args, env, args.episodes, label))
    env.close()
    table = markdown_table(rows)
    print(f"\n{args.env}: shipped policy, {args.episodes} held-out seeded episodes (seeds {args.seed}...)\n")
    print(table)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.md").write_text(table + "\n")
    (out / "metrics.json").write_text(json.dumps(rows, indent=2, default=float))
    env = _make_env(args, render=True)
    for mode in ("barrier", "none"):
        args.run_safety = mode
        ctrl, name = _controller(args, env)
        _, trace = run_episode(env, ctrl, args.seed, trace=True, render_every=2)
        assert trace is not None
        write_gif(trace.frames, out / f"rollout_{mode}.gif", 2 * env.unwrapped.dt)
        plot_rollout(trace, env, out / f"rollout_{mode}.png", f"{args.env} seed {args.seed} — {name}")
    env.close()
    print(f"\nwrote {out}/metrics.md, metrics.json, rollout_barrier.gif/.png, rollout_none.gif/.png")
    print(f"demo took {time.perf_counter() - t0:.0f} s")


def cmd_bench(args: argparse.Namespace) -> None:
    """Control-step latency of a policy at batch 1 (policy + barrier layer), median and p99."""
    import torch

    torch.set_num_threads(1)
    env = _make_env(args)
    policy = _load(args)
    check_policy_fits(policy, env)
    obs, _ = env.reset(seed=args.seed)
    base = env.unwrapped
    policy.reset()
    times = []
    for i in range(args.steps):
        state = base.safety_state()
        t0 = time.perf_counter()
        action = policy.act(obs, state, base.constraints)
        times.append(time.perf_counter() - t0)
        obs, _, term, trunc, _ = env.step(action)
        if term or trunc:
            obs, _ = env.reset(seed=args.seed + i + 1)
            policy.reset()
    us = np.asarray(times[20:]) * 1e6
    print(f"{args.env} {policy.config.cell}/{policy.run_safety}: control step median {np.median(us):.0f} µs, "
          f"p99 {np.percentile(us, 99):.0f} µs over {len(us)} steps (batch 1, 1 thread)")  # fmt: skip


# -- parser ---------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.ArgumentDefaultsHelpFormatter
    parser = argparse.ArgumentParser(prog="safeliquid", description=__doc__.splitlines()[0], formatter_class=fmt)
    parser.add_argument("--debug", action="store_true", help="print the traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser, seed: int = 0) -> None:
        p.add_argument("--env", type=_env_id, default=ENV_DEFAULT, help="environment id")
        p.add_argument("--seed", type=_at_least(0), default=seed, help="first episode seed")

    def who(p: argparse.ArgumentParser) -> None:
        p.add_argument("--policy", help="policy checkpoint (default: the shipped one for --env)")
        p.add_argument("--expert", action="store_true", help="run the environment's expert instead of a policy")
        p.add_argument("--run-safety", choices=SAFETY_MODES, help="override the policy's safety mode at run time")
        p.add_argument("--obs-noise", type=_non_negative, default=0.0, help="observation noise std")
        p.add_argument("--disturbance", type=_non_negative, default=0.0,
                       help="external-force std (units of the env's disturbance_scale)")  # fmt: skip

    p = sub.add_parser("collect", help="expert demonstrations", formatter_class=fmt)
    common(p)
    p.add_argument("--episodes", type=_at_least(1), default=100, help="episodes")
    p.add_argument("--workers", type=_at_least(0), default=2, help="worker processes (0: in this process)")
    p.add_argument("--out", type=_writable, default="runs/demos.pt", help="output file")
    p.set_defaults(func=cmd_collect)

    p = sub.add_parser("train", help="imitation + DAgger through the barrier layer", formatter_class=fmt)
    p.add_argument("--env", dest="env_id", type=_env_id, default=TrainConfig.env_id, help="environment id")
    add_arguments(p, TrainConfig, skip=("env_id",))  # every other option of TrainConfig, its help and its check
    p.add_argument("--fresh", action="store_true", help="ignore an existing last.pt in --out")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="seeded closed-loop evaluation, JSON and markdown", formatter_class=fmt)
    common(p, seed=HELD_OUT_SEED)
    who(p)
    p.add_argument("--episodes", type=_at_least(1), default=50, help="episodes")
    p.add_argument(
        "--json",
        type=_writable,
        help="write the metrics here (aggregate, and per episode under per_episode: seed, success, ...)",
    )
    p.add_argument("--markdown", type=_writable, help="write the table here")  # fmt: skip
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("rollout", help="one episode as a GIF and plots", formatter_class=fmt)
    common(p, seed=HELD_OUT_SEED)
    who(p)
    p.add_argument("--out", type=_folder, default="runs/rollout", help="output folder")
    p.add_argument("--format", choices=("gif", "mp4"), default="gif", help="video format (mp4 needs imageio-ffmpeg)")
    p.add_argument("--frame-every", type=_at_least(1), default=2, help="keep every n-th frame")
    p.set_defaults(func=cmd_rollout)

    p = sub.add_parser("demo", help="the shipped Navigate policy with and without its barrier layer",
                       formatter_class=fmt)  # fmt: skip
    common(p, seed=HELD_OUT_SEED)
    who(p)
    p.add_argument("--episodes", type=_at_least(1), default=50, help="episodes per configuration")
    p.add_argument("--out", type=_folder, default="runs/demo", help="output folder")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("bench", help="control-step latency of a policy (batch 1, 1 thread)", formatter_class=fmt)
    common(p, seed=HELD_OUT_SEED)
    p.add_argument("--policy", help="policy checkpoint (default: the shipped one for --env)")
    p.add_argument("--steps", type=_at_least(21), default=2000, help="control steps to time (the first 20 are not)")
    p.set_defaults(func=cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (ValueError, OSError) as err:  # user errors (bad values, files): one line, no traceback
        if args.debug:
            traceback.print_exc()
        print(f"error: {str(err).splitlines()[0] if str(err) else type(err).__name__}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
