"""End-to-end imitation with DAgger: BPTT through the cell and through the CBF-QP at every step.

Reads top to bottom: config, data, model, loop, log. The loss compares the
*safe* action (after the QP, for ``safety="barrier"``) with the expert's, so the
gradients reach the learned class-K gains and the cell's parameters through the
QP's KKT conditions. DAgger rounds let the learner drive while the expert labels.
Every ``eval_every`` updates a closed-loop evaluation in PyBullet runs; the best
checkpoint by (violating steps, then success rate, then return) is kept as
``best.pt``; ``last.pt`` holds everything needed to resume after a kill.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

import safeliquid.envs  # noqa: F401 - registers the environments
from safeliquid.checkpoint import read
from safeliquid.envs import make_env
from safeliquid.options import option
from safeliquid.policies import LiquidBarrierPolicy
from safeliquid.policies.priors import dyn_needs
from safeliquid.train.data import Episode, collect, load_episodes, make_batch, save_episodes
from safeliquid.train.run_log import RunLog, check_same_config, evaluate_policy, save_checkpoints
from safeliquid.train.run_options import RunOptions, learned_groups, policy_config


@dataclass
class TrainConfig(RunOptions):
    """Every knob of an imitation run (stored in ``config.json`` and in each checkpoint): the shared
    :class:`~safeliquid.train.run_options.RunOptions` and DAgger's own. Each option is declared once; the
    ``safeliquid train`` command line is generated from the fields, and each value is checked when the config
    is built (:mod:`safeliquid.options`)."""

    slow_weight: float = option(
        0.0, "velocity/task prior: weight each step's loss by FLOOR^2 / (|c|^2 + FLOOR^2), c the expert's command, "
        "so slow phases near a goal count; 0: off", low=0.0, experimental=True,
    )  # fmt: skip
    demos: int = option(200, "expert-driven demonstration episodes", low=1)
    dagger_rounds: int = option(6, "DAgger rounds (the learner drives, the expert labels)", low=0)
    dagger_episodes: int = option(50, "episodes per DAgger round", low=1)
    dagger_beta: float = option(0.3, "probability that the expert drives a step in DAgger rounds", low=0.0, high=1.0)
    updates: int = option(4000, "gradient updates, spread evenly over the 1 + dagger_rounds data rounds", low=1)
    batch_episodes: int = option(16, "episodes per gradient update", low=1)
    lr: float = option(3e-3, "Adam learning rate", low=0.0, open_low=True)
    lr_final: float = option(0.1, "final learning rate / lr (a cosine decay)", low=0.0, high=1.0, open_low=True)
    eval_every: int = option(500, "updates between closed-loop evaluations (best.pt is chosen by them)", low=1)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.slow_weight > 0 and self.prior not in ("velocity", "task"):
            raise ValueError(f"slow_weight > 0 needs prior 'velocity' or 'task', got prior {self.prior!r}")


def loss_on(
    policy: Any, batch: dict[str, torch.Tensor], backend: str = "native", weight: torch.Tensor | None = None
) -> tuple[torch.Tensor, dict[str, float]]:
    """Mean squared action error over real steps, scaled by the action bound (with a ``prior``: the error
    in the accelerations it causes, scaled by the prior's acceleration range); for ``barrier`` on the
    QP's output (solved by ``backend``, see :func:`safeliquid.qp.solve_qp`). ``weight (B, T)``, >= 0:
    a weighted mean over the real steps instead (None: every step counts once)."""
    dyn = batch.get("dyn")
    if policy.config.prior is not None and dyn is None:
        raise ValueError("a policy with a prior trains on demonstrations that carry the model's f and g")
    u_ref, mult, _ = policy(batch["obs"], dyn=dyn)
    B, T, m = u_ref.shape
    if policy.config.safety == "barrier":
        flat_mult = None if mult is None else mult.reshape(B * T, *mult.shape[2:])
        u, slack = policy.project(u_ref.reshape(B * T, m), flat_mult, batch["rows"], backend=backend)
        u = u.reshape(B, T, m)
    else:
        u, slack = u_ref, torch.zeros(0)
    if policy.config.prior is not None:
        # Compare in acceleration space, g_acc (u - u_expert) / accel_scale: torque errors on light distal
        # joints move the arm as much as large ones on the shoulder.
        diff = (dyn[1][..., -m:, :] @ (u - batch["expert"]).double().unsqueeze(-1)).squeeze(-1)
        err = (diff / policy.accel_scale).square().sum(-1).to(u.dtype)
    else:
        err = ((u - batch["expert"]) / policy.bound).square().sum(-1)
    mask = batch["step_mask"]
    w = mask.to(err.dtype)
    if weight is not None:
        if weight.shape != mask.shape or not bool((weight >= 0).all()) or float((weight * w).sum()) <= 0:
            raise ValueError(
                f"loss weight must be (B, T) = {tuple(mask.shape)}, >= 0 and positive on some real step; "
                f"got shape {tuple(weight.shape)}"
            )
        w = w * weight.to(err.dtype)
    loss = (err * w).sum() / w.sum()
    stats = {"loss": float(loss.detach())}
    if mult is not None:
        real = mult.detach()[mask]
        stats["gain_mult_mean"], stats["gain_mult_min"] = float(real.mean()), float(real.min())
        stats["gain_mult_max"] = float(real.max())
    if slack.numel():
        stats["train_slack_rows"] = float((slack > 1e-9).sum())
    return loss, stats


def label_command(batch: dict[str, torch.Tensor], prior: str, prior_gain: float) -> torch.Tensor:
    """The expert's label as the command a ``prior`` policy would output to reproduce it: the label's
    accelerations ``a = f_acc + g_acc u_expert`` give the joint velocity ``q'* = q' + a / prior_gain`` that the
    prior tracks, and ``"task"`` maps it to the task velocity ``J q'*``. Needs ``batch["dyn"]``; returns
    ``(B, T, m)`` (``"velocity"``) or ``(B, T, k)`` (``"task"``), float64."""
    if prior not in ("velocity", "task"):
        raise ValueError(f"label_command needs prior 'velocity' or 'task', got {prior!r}")
    need, what = dyn_needs(prior)
    if len(batch.get("dyn", ())) < need:
        raise ValueError(f"label_command with prior {prior!r} needs demonstrations that carry the model's {what}")
    f, g = batch["dyn"][:2]
    m = batch["expert"].shape[-1]
    accel = f[..., -m:] + (g[..., -m:, :] @ batch["expert"].double().unsqueeze(-1)).squeeze(-1)
    qd_star = f[..., :m] + accel / prior_gain
    if prior == "velocity":
        return qd_star
    return (batch["dyn"][2] @ qd_star.unsqueeze(-1)).squeeze(-1)


def slow_weight(batch: dict[str, torch.Tensor], prior: str, prior_gain: float, floor: float) -> torch.Tensor:
    """Per-step loss weights ``(B, T)`` in (0, 1]: ``floor^2 / (|c|^2 + floor^2)`` with ``c`` the
    :func:`label_command`, i.e. the loss on the command's relative error (``floor`` > 0 bounds it where the
    expert is still). Where the expert slows down (near a goal) a small absolute error is a stall, which an
    unweighted loss barely sees."""
    if not floor > 0:
        raise ValueError(f"slow_weight floor must be > 0 (a speed), got {floor}")
    speed2 = label_command(batch, prior, prior_gain).square().sum(-1)
    return (floor**2 / (speed2 + floor**2)).float()


def gradient_step(
    policy: Any, optim: torch.optim.Optimizer, batch: dict[str, torch.Tensor], lr: float,
    weight: torch.Tensor | None = None,
) -> dict[str, float]:  # fmt: skip
    """One optimiser step at learning rate ``lr`` on :func:`loss_on` (``weight (B, T)`` as there), the
    gradient norm clipped to 1; returns the loss's stats. A non-finite gradient raises
    ``FloatingPointError`` before the step, so the parameters stay as they were."""
    loss, stats = loss_on(policy, batch, weight=weight)
    optim.zero_grad()
    for group in optim.param_groups:
        group["lr"] = lr
    loss.backward()
    grad_norm = float(torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0))
    if not np.isfinite(grad_norm):
        raise FloatingPointError(f"non-finite gradient (loss {stats['loss']}); lower --lr (the rate was {lr:g})")
    optim.step()
    return stats


def learning_rate(cfg: TrainConfig, update: int) -> float:
    """Cosine decay from ``lr`` to ``lr * lr_final`` over ``updates`` (a function of the update: resume-safe)."""
    cos = 0.5 * (1.0 + math.cos(math.pi * min(update, cfg.updates) / max(cfg.updates, 1)))
    return cfg.lr * (cfg.lr_final + (1.0 - cfg.lr_final) * cos)


def _current_conventions(stored: dict[str, Any]) -> dict[str, Any]:
    """A stored train config in today's conventions: runs before 2026-12-03 wrote "no prior", "the env's dt"
    and "no prior bound" as ``prior="none"``, ``cell_dt=0`` and ``prior_bound=0``, now all None."""
    legacy = {"prior": "none", "cell_dt": 0.0, "prior_bound": 0.0}
    return {k: None if k in legacy and v == legacy[k] else v for k, v in stored.items()}


def train(cfg: TrainConfig, resume: bool = True) -> dict[str, Any]:
    """Run (or resume) a training run in ``cfg.out``; returns the final evaluation's metrics."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)

    # -- state: fresh, or resumed from last.pt ---------------------------------------------------
    state: dict[str, Any] | None = (
        read(out / "last.pt", "training state") if resume and (out / "last.pt").exists() else None
    )
    if state is not None:  # a run from before a knob existed ran with its default
        state["train_config"] = _current_conventions({**asdict(TrainConfig()), **state["train_config"]})
    if state is not None:
        check_same_config(state["train_config"], cfg, out)
    env = make_env(cfg.env_id, cfg.env_kwargs)
    goal_obs = getattr(env.unwrapped, "goal_offset_obs", None)
    if cfg.goal_gain > 0 and (cfg.prior != "task" or goal_obs is None):  # goal_gain >= 0: TrainConfig checks
        env.close()
        raise ValueError(
            f"goal_gain must be 0 (off) or > 0 with prior 'task' on an environment that declares its goal offset "
            f"in the observation (goal_offset_obs); got {cfg.goal_gain} with prior {cfg.prior!r} on {cfg.env_id} "
            f"(goal_offset_obs {goal_obs})"
        )
    (out / "config.json").write_text(json.dumps(asdict(cfg), indent=2))
    if cfg.gain_groups is not None:  # a wrong group name fails now, not after the demonstrations
        env.reset(seed=cfg.seed)
        learned_groups(cfg, env.unwrapped.constraints.names)

    # -- data --------------------------------------------------------------------------------------
    data_path = out / "data.pt"
    episodes: list[Episode] = []
    rounds_done = 0
    if data_path.exists() and state is not None:
        episodes, meta = load_episodes(str(data_path))
        rounds_done = int(meta.get("rounds", 0))
        if "episodes" in state:  # data.pt may hold a DAgger round collected after last.pt: drop it, redo it
            episodes, rounds_done = episodes[: state["episodes"]], int(state["rounds"])
    if rounds_done == 0:
        with tqdm(total=cfg.demos, desc="expert demos", leave=False) as bar:
            seeds = [cfg.seed * 100_000 + i for i in range(cfg.demos)]
            episodes = collect(cfg.env_id, seeds, cfg.workers, env_kwargs=cfg.env_kwargs, progress=bar)
        rounds_done = 1
        save_episodes(episodes, str(data_path), {"rounds": rounds_done})

    # -- model -------------------------------------------------------------------------------------
    pcfg = policy_config(cfg, env, [n for e in episodes for n in e.names])
    env.close()
    policy = LiquidBarrierPolicy(pcfg)
    obs = np.concatenate([e.obs for e in episodes])
    policy.set_normalization(obs.mean(0), obs.std(0))
    optim = torch.optim.Adam(policy.parameters(), lr=cfg.lr)
    update, best, wall0 = 0, None, 0.0
    if state is not None:
        policy.load_state_dict(state["policy"])
        optim.load_state_dict(state["optim"])
        update, best, wall0 = state["update"], state["best"], state["wall"]
    per_round = max(1, cfg.updates // (1 + cfg.dagger_rounds))

    # -- log ---------------------------------------------------------------------------------------
    log = RunLog(out, "update", update if state is not None else None)

    # -- loop --------------------------------------------------------------------------------------
    t_start = time.perf_counter() - wall0
    samples, t_samples = 0, time.perf_counter()
    last: dict[str, Any] = {}
    bar = tqdm(total=cfg.updates, initial=update, desc=f"train {cfg.cell}/{cfg.safety}")
    while update < cfg.updates:
        due_round = min(cfg.dagger_rounds, update // per_round)
        if rounds_done <= due_round:  # a DAgger round: the learner drives, the expert labels
            policy.eval()
            seeds = [cfg.seed * 100_000 + 50_000 + rounds_done * 1000 + i for i in range(cfg.dagger_episodes)]
            with tqdm(total=len(seeds), desc=f"DAgger round {rounds_done}", leave=False) as dbar:
                episodes += collect(cfg.env_id, seeds, cfg.workers, policy, cfg.dagger_beta, cfg.env_kwargs, dbar)
            rounds_done += 1
            save_episodes(episodes, str(data_path), {"rounds": rounds_done})
        policy.train()
        rng = np.random.default_rng(cfg.seed * 1_000_003 + update)
        pick = rng.choice(len(episodes), size=min(cfg.batch_episodes, len(episodes)), replace=False)
        batch = make_batch([episodes[i] for i in pick], pcfg.gain_groups)
        weight = slow_weight(batch, cfg.prior, cfg.prior_gain, cfg.slow_weight) if cfg.slow_weight else None
        try:
            stats = gradient_step(policy, optim, batch, learning_rate(cfg, update), weight)
        except FloatingPointError as err:
            raise FloatingPointError(f"update {update}: {err}") from None
        update += 1
        samples += int(batch["step_mask"].sum())
        bar.update(1)
        bar.set_postfix(loss=f"{stats['loss']:.4f}")
        log.scalars("train", stats, update)
        if update % cfg.eval_every == 0 or update == cfg.updates:
            policy.eval()
            metrics = evaluate_policy(policy, cfg.env_id, cfg.eval_episodes, env_kwargs=cfg.env_kwargs)
            now = time.perf_counter()
            row = {
                "update": update,
                "loss": stats["loss"],
                "demo_episodes": len(episodes),
                "wall_s": now - t_start,
                "samples_per_s": samples / max(now - t_samples, 1e-9),
                **{k: v for k, v in metrics.items() if not isinstance(v, tuple)},
                **{k: v for k, v in stats.items() if k != "loss"},
            }
            samples, t_samples = 0, now
            log.scalars("eval", {k: v for k, v in row.items() if k != "update"}, update)
            log.row(row)
            best = save_checkpoints(
                policy,
                out,
                metrics,
                {"update": update},
                best,
                {
                    "train_config": asdict(cfg),
                    "policy": policy.state_dict(),
                    "optim": optim.state_dict(),
                    "update": update,
                    "wall": now - t_start,
                    "episodes": len(episodes),  # the data this state was trained on: data.pt's first ones
                    "rounds": rounds_done,
                },
            )
            last = row
            tqdm.write(
                f"update {update}: loss {stats['loss']:.4f}  success {metrics['success_rate']:.2f}  "
                f"violating steps {metrics['violating_steps']}  min h {metrics['min_barrier']:.3f}"
            )
    bar.close()
    log.close()
    return last
