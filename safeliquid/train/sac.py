"""Soft actor-critic with the actor's gradient through the barrier layer: ``safeliquid train --algo sac``.

Reads top to bottom like CleanRL's SAC: config, replay, critic, the actor's safe action, the loop.

**The gradient through the layer** (``gradient="layer"``, as SAC-RCBF does with its robust-CBF QP). The actor
samples the raw outputs ``a = mean + std * eps`` of the network (the command and the gain logits; a Gaussian
with a learned state-independent std, reparametrised), the policy's :meth:`~LiquidBarrierPolicy.outputs` map
them to the reference ``u_ref`` and the class-K gains, and the differentiable QP
(:meth:`~LiquidBarrierPolicy.project`, the layer's own rows stored in the replay for each state) gives the safe
action ``u``. The twin critics score ``Q(obs, u)``, the action the robot executes, so the actor's loss
``alpha log pi(a) - Q(obs, u(a))`` differentiates through the QP: into the reference where the layer is
inactive, and into the gains (which move the constraint's right-hand side) where it is active.

**The entropy** is taken before the filter, as SAC-RCBF does (the executed action's density has point masses
on the safe set's boundary): that of the squashed outputs ``tanh(a)``, since the policy squashes every raw output
by tanh (SAC's tanh-Gaussian). It keeps the exploration off saturation.

**The ablation** (``gradient="shield"``): the layer is part of the environment. The critics score the squashed
raw outputs ``tanh(a)`` (command and gains), and nothing differentiates through the QP; the executed actions
are the same.

**Recurrence.** Each transition stores the cell's state before and after its step (R2D2's stored state); the
updates run one cell step from it, without burn-in, so the actor's state is the one it had when acting.
The observation normalisation is fixed from the random warm-up steps, so stored states stay meaningful.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from safeliquid.options import option
from safeliquid.policies import LiquidBarrierPolicy
from safeliquid.policies.scene import scene_rows
from safeliquid.train.acting import TRAIN_SEED, ActionMap, RunningNorm, initial_policy, vector_env
from safeliquid.train.ppo import gaussian_logp
from safeliquid.train.run_log import RunLog, evaluate_policy, open_run, save_checkpoints
from safeliquid.train.run_options import RunOptions

GRADIENTS = ("layer", "shield")
ROW_KEYS = ("A", "L", "degree", "group", "default", "mask")


@dataclass
class SACConfig(RunOptions):
    """Every knob of a SAC run (stored in ``config.json`` and in ``last.pt``): the shared
    :class:`~safeliquid.train.run_options.RunOptions` and SAC's own."""

    total_steps: int = option(300_000, "environment steps to train on, all environments together", low=1)
    num_envs: int = option(8, "environments stepped together (one batched forward and one QP call per step)", low=1)
    gradient: str = option(
        "layer", "layer: the critic scores the safe action and the actor's gradient flows through the QP; "
        "shield: the critic scores the raw outputs and the layer is part of the environment", choices=GRADIENTS,
    )  # fmt: skip
    buffer_size: int = option(200_000, "replay capacity (transitions)", low=1)
    batch_size: int = option(256, "transitions per gradient step", low=1)
    learning_starts: int = option(10_000, "environment steps of random raw outputs before the first update (they "
                                  "also fix the observation normalisation)", low=1)  # fmt: skip
    utd: float = option(0.125, "gradient steps per environment step", low=0.0, open_low=True)
    lr: float = option(3e-4, "Adam learning rate of the actor, the critics and the temperature", low=0.0,
                       open_low=True)  # fmt: skip
    gamma: float = option(0.99, "discount", low=0.0, high=1.0)
    tau: float = option(0.005, "target critics' Polyak step", low=0.0, high=1.0, open_low=True)
    init_std: float = option(0.5, "initial standard deviation of the raw outputs' Gaussian", low=0.0, open_low=True)
    init_alpha: float = option(0.1, "initial entropy temperature (then tuned to the target entropy)", low=0.0,
                               open_low=True)  # fmt: skip
    critic_units: int = option(256, "width of each critic's two hidden layers", low=1)
    eval_every: int = option(25_000, "environment steps between closed-loop evaluations (best.pt)", low=1)
    init: str | None = option(None, "a policy checkpoint to fine-tune (its network, config and normalisation)")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.prior is not None:
            raise ValueError(f"prior must be none for --algo sac (its replay holds no model terms), got {self.prior!r}")
        if self.learning_starts < self.batch_size:
            raise ValueError(f"learning_starts must be >= batch_size ({self.batch_size}), got {self.learning_starts}")


# -- the pieces -------------------------------------------------------------------------------------
class Replay:
    """A ring buffer of transitions: tensors ``(capacity, ...)`` per key, allocated at the first :meth:`add`.
    The layer's rows (``rows/*`` and ``next_rows/*``, padded over barriers, ``mask`` marking real ones) grow in
    their barrier axis when a scene with more barriers arrives."""

    def __init__(self, capacity: int) -> None:
        self.capacity, self.size, self.pos = capacity, 0, 0
        self.data: dict[str, Tensor] = {}

    def add(self, batch: dict[str, Tensor]) -> None:
        """``batch``: tensors ``(n, ...)`` per key, the same keys every call."""
        n = next(iter(batch.values())).shape[0]
        if not self.data:
            self.data = {k: torch.zeros(self.capacity, *v.shape[1:], dtype=v.dtype) for k, v in batch.items()}
        for key, v in batch.items():
            have = self.data[key]
            if key.split("/")[0] in ("rows", "next_rows") and v.shape[1] != have.shape[1]:
                name, k = key.split("/")[1], max(v.shape[1], have.shape[1])
                v, self.data[key] = _pad_rows(name, v, k), _pad_rows(name, have, k)
            idx = (torch.arange(n) + self.pos) % self.capacity
            self.data[key][idx] = v
        self.pos = (self.pos + n) % self.capacity
        self.size = min(self.size + n, self.capacity)

    def sample(self, n: int, gen: torch.Generator) -> dict[str, Tensor]:
        idx = torch.randint(0, self.size, (n,), generator=gen)
        return {k: v[idx] for k, v in self.data.items()}

    def state(self) -> dict[str, Any]:
        return {"size": self.size, "pos": self.pos, "data": {k: v[: self.size] for k, v in self.data.items()}}

    def load(self, state: dict[str, Any]) -> None:
        self.size, self.pos = state["size"], state["pos"]
        self.data = {}
        if state["data"]:
            self.data = {k: torch.zeros(self.capacity, *v.shape[1:], dtype=v.dtype) for k, v in state["data"].items()}
            for k, v in state["data"].items():
                self.data[k][: self.size] = v


class QNet(nn.Module):
    """``Q(obs_n, x)``: an MLP on the normalised observation ``(B, obs_dim)`` and the critic's action ``x (B,
    d)`` -> ``(B,)``."""

    def __init__(self, obs_dim: int, act_dim: int, units: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(obs_dim + act_dim, units), nn.ReLU(), nn.Linear(units, units), nn.ReLU(),
                                 nn.Linear(units, 1))  # fmt: skip

    def forward(self, obs_n: Tensor, x: Tensor) -> Tensor:
        return self.net(torch.cat([obs_n, x], -1)).squeeze(-1)


def scene_rows_of(policy: LiquidBarrierPolicy, subs: list[Any]) -> dict[str, Tensor]:
    """The layer's rows at each sub-environment's current state, padded over barriers: ``(N, K, ...)``."""
    groups = list(policy.config.gain_groups) if policy.run_safety == "barrier" else []
    parts = []
    for s in subs:
        x = torch.from_numpy(np.asarray(s.safety_state(), np.float64)).unsqueeze(0)
        parts.append(scene_rows(s.constraints, x, groups, policy.config.max_degree))
    k = max(p["A"].shape[1] for p in parts)
    out = {}
    for key in ROW_KEYS:
        out[key] = torch.cat([_pad_rows(key, p[key], k) for p in parts])
    return out


def _pad_rows(key: str, v: Tensor, k: int) -> Tensor:
    """Rows ``v (n, K, ...)`` of kind ``key`` padded to ``k`` barriers with rows that are masked off."""
    if v.shape[1] >= k:
        return v
    fill = {"A": 0.0, "L": 0.0, "degree": 1, "group": -1, "default": 1.0, "mask": False}[key]
    pad = torch.full((v.shape[0], k - v.shape[1], *v.shape[2:]), fill, dtype=v.dtype)
    return torch.cat([v, pad], 1)


def squashed_logp(a: Tensor, mean: Tensor, log_std: Tensor) -> Tensor:
    """``log pi(tanh(a))`` for ``a ~ N(mean, exp(log_std)^2)``, summed over the last axis: ``(..., A) -> (...)``.
    The policy squashes every raw output by tanh (the command to its bound, the gain logits to their range), so
    this is the density of what it commands; as in SAC, its entropy penalises saturated outputs, which an
    entropy over ``a`` does not see."""
    log_det = 2.0 * (math.log(2.0) - a - nn.functional.softplus(-2.0 * a))  # log(1 - tanh(a)^2), stably
    return gaussian_logp(a, mean, log_std) - log_det.sum(-1)


def critic_action(policy: LiquidBarrierPolicy, a: Tensor, rows: dict[str, Tensor], gradient: str) -> Tensor:
    """What the critics score for raw outputs ``a (B, outputs)`` at states with the layer's ``rows``: the safe
    action over the input bound ``(B, m)`` (``layer``, differentiable through the QP) or ``tanh(a)`` (``shield``)."""
    if gradient == "shield":
        return torch.tanh(a)
    u_ref, mult = policy.outputs(a)
    if policy.run_safety == "none" or rows["A"].shape[1] == 0:
        return u_ref / policy.bound
    u, _ = policy.project(u_ref, mult if policy.run_safety == "barrier" else None, rows)
    return u.to(a.dtype) / policy.bound


# -- the run ----------------------------------------------------------------------------------------
def train_sac(cfg: SACConfig, resume: bool = True) -> dict[str, Any]:
    """Run (or resume) a SAC run in ``cfg.out``; returns the last evaluation's row."""
    torch.set_num_threads(1)
    out, state = open_run(cfg, "sac", resume)
    vec = vector_env(cfg, cfg.num_envs, gym.vector.AutoresetMode.NEXT_STEP)
    try:
        return _loop(cfg, out, vec, state)
    finally:
        vec.close()


def _loop(cfg: SACConfig, out: Path, vec: gym.vector.SyncVectorEnv, state: dict[str, Any] | None) -> dict:
    N = cfg.num_envs
    obs_np, _ = vec.reset(seed=TRAIN_SEED + cfg.seed * 1000)
    policy = initial_policy(cfg, cfg.init, vec)
    n_out = policy.n_outputs
    d = policy.config.act_dim if cfg.gradient == "layer" else n_out
    critics = nn.ModuleList([QNet(policy.config.obs_dim, d, cfg.critic_units) for _ in range(2)])
    targets = copy.deepcopy(critics).requires_grad_(False)
    log_std = nn.Parameter(torch.full((n_out,), math.log(cfg.init_std)))
    log_alpha = nn.Parameter(torch.tensor(math.log(cfg.init_alpha)))
    actor_opt = torch.optim.Adam([*policy.parameters(), log_std], lr=cfg.lr)
    critic_opt = torch.optim.Adam(critics.parameters(), lr=cfg.lr)
    alpha_opt = torch.optim.Adam([log_alpha], lr=cfg.lr)
    target_entropy = -float(n_out)
    replay, norm = Replay(cfg.buffer_size), RunningNorm(policy.config.obs_dim)
    normalised = cfg.init is not None  # a fine-tuned policy keeps its checkpoint's normalisation
    steps, updates, best, wall0, violating, owed = 0, 0, None, 0.0, 0, 0.0
    if state is not None:
        policy.load_state_dict(state["policy"])
        critics.load_state_dict(state["critics"])
        targets.load_state_dict(state["targets"])
        with torch.no_grad():
            log_std.copy_(state["log_std"])
            log_alpha.copy_(state["log_alpha"])
        for opt, key in ((actor_opt, "actor_opt"), (critic_opt, "critic_opt"), (alpha_opt, "alpha_opt")):
            opt.load_state_dict(state[key])
        replay.load(state["replay"])
        steps, updates, best, wall0 = state["steps"], state["updates"], state["best"], state["wall"]
        violating, normalised = state["train_violating_steps"], True
        # Episodes in flight at the kill are not in last.pt: the resumed run starts new ones.
        obs_np, _ = vec.reset(seed=TRAIN_SEED + cfg.seed * 1000 + steps)
    gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + steps)
    amap = ActionMap(policy, N)
    log = RunLog(out, "env_steps", steps if state is not None else None)
    with torch.no_grad():
        h = torch.zeros_like(policy.raw_step(torch.zeros(N, policy.config.obs_dim), None)[1])
    subs = [e.unwrapped for e in vec.envs]
    rows_now = scene_rows_of(policy, subs)
    skip = np.zeros(N, dtype=bool)  # the env's next step is its autoreset (NEXT_STEP mode): no transition
    ep_ret, ep_cost = np.zeros(N), np.zeros(N)
    finished: list[tuple[float, float, bool]] = []
    losses: dict[str, float] = {}
    window = {"intervention": 0.0, "fallback_steps": 0, "solver_failures": 0}
    t_start, t_window, steps_window = time.perf_counter() - wall0, time.perf_counter(), steps
    bar = tqdm(total=cfg.total_steps, initial=min(steps, cfg.total_steps), desc=f"sac {cfg.cell}/{cfg.gradient}")
    next_eval, next_log = (steps // cfg.eval_every + 1) * cfg.eval_every, steps + 1000
    last: dict[str, Any] = {}
    while steps < cfg.total_steps:
        o = torch.from_numpy(np.asarray(obs_np, dtype=np.float32))
        with torch.no_grad():
            mean, h_next = policy.raw_step(o, h)
            if steps < cfg.learning_starts and cfg.init is None:
                a = torch.randn(mean.shape, generator=gen)
            else:
                a = mean + torch.exp(log_std) * torch.randn(mean.shape, generator=gen)
        u, report = amap(a, o, subs)
        obs2, reward, term, trunc, info = vec.step(u.astype(np.float32))
        done = np.logical_or(term, trunc)
        rows_next = scene_rows_of(policy, subs)
        live = ~skip
        cost = np.asarray(info.get("cost", np.zeros(N)), dtype=np.float64)
        if live.any():
            keep = torch.from_numpy(np.flatnonzero(live))
            bound = policy.bound.double()
            batch = {
                "obs": o[keep], "h": h[keep], "a": a[keep], "u": (torch.from_numpy(u) / bound).float()[keep],
                "reward": torch.from_numpy(np.asarray(reward, np.float32))[keep],
                "term": torch.from_numpy(np.asarray(term, np.float32))[keep],
                "next_obs": torch.from_numpy(np.asarray(obs2, np.float32))[keep], "next_h": h_next[keep],
                **{f"rows/{k}": v[keep] for k, v in rows_now.items()},
                **{f"next_rows/{k}": v[keep] for k, v in rows_next.items()},
            }  # fmt: skip
            replay.add(batch)
            n_live = int(live.sum())
            steps += n_live
            bar.update(n_live)
            violating += int((cost[live] > 0).sum())
            window["intervention"] += float(report["intervention"][live].sum())
            window["fallback_steps"] += int(report["fallback"][live].sum())
            window["solver_failures"] += int(report["failed"][live].sum())
            ep_ret[live] += np.asarray(reward)[live]
            ep_cost[live] += cost[live]
            if not normalised:
                norm.update(np.asarray(obs_np, dtype=np.float64)[live])
            success = np.asarray(info.get("is_success", np.zeros(N, dtype=bool)), dtype=bool)
            for i in np.flatnonzero(done & live):
                finished.append((float(ep_ret[i]), float(ep_cost[i]), bool(success[i])))
                ep_ret[i], ep_cost[i] = 0.0, 0.0
        h = h_next * torch.from_numpy(~(done | skip)).unsqueeze(-1).float()
        skip, obs_np, rows_now = done, obs2, rows_next
        subs = [e.unwrapped for e in vec.envs]

        if steps < cfg.learning_starts:
            continue
        if not normalised:  # fix the normalisation from the warm-up: stored states stay meaningful
            policy.set_normalization(norm.mean, np.sqrt(norm.var))
            normalised = True
        owed += cfg.utd * int(live.sum())
        while owed >= 1.0:
            owed -= 1.0
            losses = _update(cfg, policy, critics, targets, log_std, log_alpha, (actor_opt, critic_opt, alpha_opt),
                             replay.sample(cfg.batch_size, gen), gen, target_entropy)  # fmt: skip
            updates += 1

        if steps >= next_log or steps >= next_eval or steps >= cfg.total_steps:
            now = time.perf_counter()
            recent = finished[-50:]
            train_row = {
                "EpRet": float(np.mean([r for r, _, _ in recent])) if recent else float("nan"),
                "EpCost": float(np.mean([c for _, c, _ in recent])) if recent else float("nan"),
                "success_rate": float(np.mean([s for _, _, s in recent])) if recent else float("nan"),
                "mean_intervention": window["intervention"] / max(steps - steps_window, 1),
                "fallback_steps": window["fallback_steps"],
                "solver_failures": window["solver_failures"],
                "train_violating_steps": violating,
                "steps_per_s": (steps - steps_window) / max(now - t_window, 1e-9),
                "updates": updates,
                "alpha": float(log_alpha.detach().exp()),
                "std": float(torch.exp(log_std.detach()).mean()),
                **losses,
            }
            t_window, steps_window, next_log = now, steps, steps + 1000
            window = dict.fromkeys(window, 0)
            log.scalars("train", train_row, steps)
            bar.set_postfix(ret=f"{train_row['EpRet']:.2f}", succ=f"{train_row['success_rate']:.2f}", viol=violating)
            row = {"env_steps": steps, "wall_s": now - t_start, **{f"train_{k}": v for k, v in train_row.items()}}
            if steps < next_eval and steps < cfg.total_steps:
                log.row(row)
                continue
            next_eval = (steps // cfg.eval_every + 1) * cfg.eval_every
            metrics = evaluate_policy(policy, cfg.env_id, cfg.eval_episodes, env_kwargs=cfg.env_kwargs)
            scalar = {k: v for k, v in metrics.items() if not isinstance(v, tuple)}
            log.scalars("eval", scalar, steps)
            row.update(scalar)
            log.row(row)
            best = save_checkpoints(
                policy, out, metrics, {"env_steps": steps, "algo": "sac"}, best,
                {
                    "train_config": asdict(cfg), "policy": policy.state_dict(), "critics": critics.state_dict(),
                    "targets": targets.state_dict(), "log_std": log_std.detach().clone(),
                    "log_alpha": log_alpha.detach().clone(), "actor_opt": actor_opt.state_dict(),
                    "critic_opt": critic_opt.state_dict(), "alpha_opt": alpha_opt.state_dict(),
                    "replay": replay.state(), "steps": steps, "updates": updates, "best": best,
                    "wall": now - t_start, "train_violating_steps": violating,
                },
            )  # fmt: skip
            last = row
            tqdm.write(
                f"{steps} steps: success {metrics['success_rate']:.2f}  EpRet {metrics['EpRet']:.2f}  "
                f"violating steps (eval) {metrics['violating_steps']}  (training, all) {violating}"
            )
    bar.close()
    log.close()
    return last


def _update(
    cfg: SACConfig,
    policy: LiquidBarrierPolicy,
    critics: nn.ModuleList,
    targets: nn.ModuleList,
    log_std: nn.Parameter,
    log_alpha: nn.Parameter,
    opts: tuple[torch.optim.Optimizer, ...],
    b: dict[str, Tensor],
    gen: torch.Generator,
    target_entropy: float,
) -> dict[str, float]:
    """One gradient step of the critics, the actor and the temperature on the replay batch ``b``."""
    actor_opt, critic_opt, alpha_opt = opts
    rows = {k: b[f"rows/{k}"] for k in ROW_KEYS}
    next_rows = {k: b[f"next_rows/{k}"] for k in ROW_KEYS}
    alpha = float(log_alpha.detach().exp())
    std = torch.exp(log_std)

    def norm_obs(obs: Tensor) -> Tensor:
        return ((obs - policy.obs_mean) / policy.obs_std).clamp(-10.0, 10.0)

    with torch.no_grad():
        mean2, _ = policy.raw_step(b["next_obs"], b["next_h"])
        a2 = mean2 + std * torch.randn(mean2.shape, generator=gen)
        x2 = critic_action(policy, a2, next_rows, cfg.gradient)
        o2 = norm_obs(b["next_obs"])
        q_next = torch.min(targets[0](o2, x2), targets[1](o2, x2)) - alpha * squashed_logp(a2, mean2, log_std)
        y = b["reward"] + cfg.gamma * (1.0 - b["term"]) * q_next
    o = norm_obs(b["obs"])
    x = b["u"] if cfg.gradient == "layer" else torch.tanh(b["a"])
    q_loss = sum(0.5 * ((q(o, x) - y) ** 2).mean() for q in critics)
    critic_opt.zero_grad()
    q_loss.backward()
    critic_opt.step()

    mean, _ = policy.raw_step(b["obs"], b["h"])
    a = mean + std * torch.randn(mean.shape, generator=gen)
    logp = squashed_logp(a, mean, log_std)
    x_pi = critic_action(policy, a, rows, cfg.gradient)
    q_pi = torch.min(critics[0](o, x_pi), critics[1](o, x_pi))
    actor_loss = (alpha * logp - q_pi).mean()
    actor_opt.zero_grad()
    actor_loss.backward()
    nn.utils.clip_grad_norm_([*policy.parameters(), log_std], 10.0)
    actor_opt.step()
    with torch.no_grad():
        log_std.clamp_(-5.0, 1.0)

    alpha_loss = -(log_alpha * (logp.detach() + target_entropy)).mean()
    alpha_opt.zero_grad()
    alpha_loss.backward()
    alpha_opt.step()
    with torch.no_grad():
        for q, t in zip(critics, targets, strict=True):
            for p, pt in zip(q.parameters(), t.parameters(), strict=True):
                pt.mul_(1.0 - cfg.tau).add_(p, alpha=cfg.tau)
    return {
        "q_loss": float(q_loss.detach()),
        "actor_loss": float(actor_loss.detach()),
        "entropy": float(-logp.detach().mean()),
    }
