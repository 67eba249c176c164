"""Recurrent PPO with the barrier layer in the loop: ``safeliquid train --algo ppo``.

Reads top to bottom like CleanRL's LSTM-PPO: config, the action map, rollout, advantages, update, loop.

**The probability model.** The network's raw outputs ``y`` (the command and the gain logits, before anything
squashes them) are the mean of a diagonal Gaussian with a learned, state-independent standard deviation. A
sample ``a`` of it is PPO's action. Everything after it is the *action map*, as deterministic as the
environment's dynamics: the tanh to the input bounds (or a command prior's inverse dynamics), the gains'
``gain_range ** tanh`` and the barrier layer's projection onto the certified safe set. So:

- ``log pi(a | history)`` is exact whatever the layer does to the action; no change of variables is needed,
  because the density is over ``a``, not over the executed action. The ratio is 1 on the first epoch of fresh
  data (a test holds it).
- The layer's learned gains get a policy gradient: they are part of ``a``.
- The mean ``a = y`` maps to exactly the saved policy's deterministic action (:meth:`LiquidBarrierPolicy.act`).

Rejected: a density over the executed action (after a projection onto a polytope it has point masses on the
boundary, so squashed or truncated Gaussians there are wrong exactly where the layer acts), and a
reparametrised path through the layer (it needs a critic of the action: that is the off-policy algorithm's).

Environments step together in a :class:`gymnasium.vector.SyncVectorEnv` (same-step autoreset); the batched
network runs once per step and the layer solves every environment's QP in one call
(:func:`~safeliquid.safety.layer.project_many`). Truncated episodes bootstrap from the critic.
"""

from __future__ import annotations

import itertools
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
from safeliquid.train.acting import (
    TRAIN_SEED,
    ActionMap,
    RunningNorm,
    initial_policy,
    step_values,
    vector_env,
)
from safeliquid.train.run_log import RunLog, evaluate_policy, open_run, save_checkpoints
from safeliquid.train.run_options import RunOptions


@dataclass
class PPOConfig(RunOptions):
    """Every knob of a PPO run (stored in ``config.json`` and in ``last.pt``): the shared
    :class:`~safeliquid.train.run_options.RunOptions` and PPO's own."""

    total_steps: int = option(500_000, "environment steps to train on, all environments together", low=1)
    num_envs: int = option(8, "environments stepped together (one batched forward and one QP call per step)", low=1)
    rollout_steps: int = option(128, "steps per environment between updates: the BPTT length", low=2)
    epochs: int = option(4, "passes over each rollout", low=1)
    minibatches: int = option(4, "minibatches per pass, each a subset of the environments' whole sequences", low=1)
    lr: float = option(3e-4, "Adam learning rate, annealed linearly to lr_final x lr", low=0.0, open_low=True)
    lr_final: float = option(0.1, "final learning rate / lr", low=0.0, high=1.0)
    gamma: float = option(0.99, "discount", low=0.0, high=1.0)
    gae_lambda: float = option(0.95, "GAE's lambda", low=0.0, high=1.0)
    clip: float = option(0.2, "PPO's ratio clip", low=0.0, open_low=True)
    ent_coef: float = option(0.0, "entropy bonus", low=0.0)
    vf_coef: float = option(0.5, "value loss weight", low=0.0)
    max_grad_norm: float = option(0.5, "gradient norm clip", low=0.0, open_low=True)
    init_std: float = option(0.5, "initial standard deviation of the raw outputs' Gaussian", low=0.0, open_low=True)
    critic_units: int = option(64, "width of the MLP critic's two hidden layers", low=1)
    eval_every: int = option(50_000, "environment steps between closed-loop evaluations (best.pt)", low=1)
    init: str | None = option(None, "a policy checkpoint to fine-tune (its network, config and normalisation)")
    intervention_penalty: float = option(
        0.0, "subtracted from the training reward per step, times (|u - u_ref| / the input bound)^2: where the layer "
        "overrides the command, the command has no effect on the next state, so without it nothing tells the policy "
        "that pushing into a constraint is useless. Logged returns stay the environment's", low=0.0,
    )  # fmt: skip
    cost_limit: float | None = option(
        None, "PPO-Lagrangian: the episode cost (violating steps) to keep below, by a Lagrange multiplier on the "
        "cost advantage; none: off", low=0.0,
    )  # fmt: skip
    lagrange_lr: float = option(0.05, "the Lagrange multiplier's step per update (with cost_limit)", low=0.0,
                                open_low=True)  # fmt: skip

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_envs % self.minibatches:
            raise ValueError(f"minibatches must divide num_envs ({self.num_envs}), got {self.minibatches}")


# -- the pieces -------------------------------------------------------------------------------------
class Critic(nn.Module):
    """``V(obs)``: an MLP on the policy's normalised observation ``(B, obs_dim) -> (B,)``."""

    def __init__(self, obs_dim: int, units: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(obs_dim, units), nn.Tanh(), nn.Linear(units, units), nn.Tanh(),
                                 nn.Linear(units, 1))  # fmt: skip
        nn.init.orthogonal_(self.net[-1].weight, 0.01)

    def forward(self, obs_n: Tensor) -> Tensor:
        return self.net(obs_n).squeeze(-1)


def gaussian_logp(a: Tensor, mean: Tensor, log_std: Tensor) -> Tensor:
    """``log N(a; mean, exp(log_std)^2)`` summed over the last axis: ``(..., A) -> (...)``."""
    z = (a - mean) * torch.exp(-log_std)
    return (-0.5 * z**2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)


def gae(rewards: Tensor, values: Tensor, dones: Tensor, last_value: Tensor, gamma: float, lam: float) -> Tensor:
    """Generalised advantage estimates ``(T, N)`` from ``rewards``, ``values`` and ``dones`` (an episode ended
    at step t) ``(T, N)`` and ``last_value (N,)`` after the last step."""
    adv = torch.zeros_like(rewards)
    running = torch.zeros_like(last_value)
    for t in reversed(range(rewards.shape[0])):
        next_value = last_value if t == rewards.shape[0] - 1 else values[t + 1]
        keep = 1.0 - dones[t]
        delta = rewards[t] + gamma * next_value * keep - values[t]
        running = delta + gamma * lam * keep * running
        adv[t] = running
    return adv


def sequence_means(policy: LiquidBarrierPolicy, obs: Tensor, starts: Tensor, h0: Tensor) -> Tensor:
    """The raw outputs along stored rollouts (BPTT through the cell): ``obs (T, B, obs_dim)``, ``starts (T,
    B)`` (1 where an episode starts, which zeroes the recurrent state), ``h0 (B, H)`` -> ``(T, B, outputs)``.
    The rollout is cut where any episode starts, and each piece runs the cell's whole-sequence path (5x the
    speed of step-by-step BPTT for the LTC)."""
    cuts = [0, *(t for t in range(1, obs.shape[0]) if bool(starts[t].any())), obs.shape[0]]
    h, pieces = h0, []
    for a, b in itertools.pairwise(cuts):
        h = h * (1.0 - starts[a]).unsqueeze(-1)
        raw, h = policy.raw_sequence(obs[a:b].transpose(0, 1), h)
        pieces.append(raw.transpose(0, 1))
    return torch.cat(pieces)


# -- the run ----------------------------------------------------------------------------------------
def train_ppo(cfg: PPOConfig, resume: bool = True) -> dict[str, Any]:
    """Run (or resume) a PPO run in ``cfg.out``; returns the last evaluation's row."""
    torch.set_num_threads(1)
    out, state = open_run(cfg, "ppo", resume)

    vec = vector_env(cfg, cfg.num_envs, gym.vector.AutoresetMode.SAME_STEP)
    try:
        return _loop(cfg, out, vec, state)
    finally:
        vec.close()


def _loop(cfg: PPOConfig, out: Path, vec: gym.vector.SyncVectorEnv, state: dict[str, Any] | None) -> dict:
    steps, iteration, best, wall0, violating, lagrange = 0, 0, None, 0.0, 0, 0.0
    obs_np, _ = vec.reset(seed=TRAIN_SEED + cfg.seed * 1000)
    policy = initial_policy(cfg, cfg.init, vec)
    n_out = policy.n_outputs
    critic = Critic(policy.config.obs_dim, cfg.critic_units)
    log_std = nn.Parameter(torch.full((n_out,), math.log(cfg.init_std)))
    # PPO-Lagrangian's cost critic: the baseline of the cost advantage (a cost-to-go per step)
    cost_critic = Critic(policy.config.obs_dim, cfg.critic_units) if cfg.cost_limit is not None else None
    params = [*policy.parameters(), *critic.parameters(), log_std]
    if cost_critic is not None:
        params += list(cost_critic.parameters())
    optim = torch.optim.Adam(params, lr=cfg.lr, eps=1e-5)
    norm = RunningNorm(policy.config.obs_dim)
    # Rewards are divided by the running std of the discounted return (as gymnasium's NormalizeReward): the
    # critic's targets stay O(1) whatever the task's reward scale, so its gradient does not swamp the actor's.
    ret_norm, disc_ret = RunningNorm(1), np.zeros(cfg.num_envs)
    if cfg.init is not None:  # start from the checkpoint's normalisation
        norm.mean, norm.var = policy.obs_mean.double().numpy(), policy.obs_std.double().numpy() ** 2
        norm.count = 1e4
    if state is not None:
        policy.load_state_dict(state["policy"])
        critic.load_state_dict(state["critic"])
        if cost_critic is not None:
            cost_critic.load_state_dict(state["cost_critic"])
        with torch.no_grad():
            log_std.copy_(state["log_std"])
        optim.load_state_dict(state["optim"])
        norm.load(state["norm"])
        ret_norm.load(state["ret_norm"])
        steps, iteration, best, wall0 = state["steps"], state["iteration"], state["best"], state["wall"]
        violating, lagrange = state["train_violating_steps"], state["lagrange"]
        # Episodes in flight at the kill are not in last.pt: the resumed run starts new ones.
        obs_np, _ = vec.reset(seed=TRAIN_SEED + cfg.seed * 1000 + iteration * cfg.num_envs)
    amap = ActionMap(policy, cfg.num_envs)
    log = RunLog(out, "env_steps", steps if state is not None else None)

    N, T, A = cfg.num_envs, cfg.rollout_steps, n_out
    per_iter = N * T
    iterations = math.ceil(cfg.total_steps / per_iter)
    with torch.no_grad():
        h = torch.zeros_like(policy.raw_step(torch.zeros(N, policy.config.obs_dim), None)[1])
    starts = torch.ones(N)
    ep_ret, ep_cost, ep_len = np.zeros(N), np.zeros(N), np.zeros(N, dtype=int)
    finished: list[tuple[float, float, int, bool]] = []
    t_start = time.perf_counter() - wall0
    last: dict[str, Any] = {}
    bar = tqdm(total=cfg.total_steps, initial=min(steps, cfg.total_steps), desc=f"ppo {cfg.cell}/{cfg.safety}")
    next_eval = (steps // cfg.eval_every + 1) * cfg.eval_every
    while iteration < iterations:
        t_iter = time.perf_counter()
        torch.manual_seed(cfg.seed * 1_000_003 + iteration)  # the exploration noise and the minibatch order of
        rng = np.random.default_rng(cfg.seed * 1_000_003 + iteration)  # an iteration follow from its index
        frac = iteration / max(iterations, 1)
        for group in optim.param_groups:
            group["lr"] = cfg.lr * (1.0 - (1.0 - cfg.lr_final) * frac)
        policy.set_normalization(norm.mean, np.sqrt(norm.var))

        # -- rollout ---------------------------------------------------------------------------------
        buf_obs = torch.zeros(T, N, policy.config.obs_dim)
        buf_a, buf_logp = torch.zeros(T, N, A), torch.zeros(T, N)
        buf_r, buf_c, buf_done, buf_v = (torch.zeros(T, N) for _ in range(4))
        buf_cv, buf_c_boot = torch.zeros(T, N), torch.zeros(T, N)  # the cost critic's values and bootstraps
        buf_starts = torch.zeros(T, N)
        h0 = h.clone()
        stats = {"intervention": 0.0, "slack_steps": 0, "fallback_steps": 0, "solver_failures": 0}
        subs = [e.unwrapped for e in vec.envs]
        for t in range(T):
            o = torch.from_numpy(np.asarray(obs_np, dtype=np.float32))
            norm.update(np.asarray(obs_np, dtype=np.float64))
            with torch.no_grad():
                h = h * (1.0 - starts).unsqueeze(-1)
                mean, h = policy.raw_step(o, h)
                a = mean + torch.exp(log_std) * torch.randn_like(mean)
                buf_v[t] = critic(_normalised(policy, o))
                if cost_critic is not None:
                    buf_cv[t] = cost_critic(_normalised(policy, o))
            buf_obs[t], buf_a[t], buf_starts[t] = o, a, starts
            buf_logp[t] = gaussian_logp(a, mean, log_std.detach())
            u, report = amap(a, o, subs)
            obs_np, reward, term, trunc, info = vec.step(u.astype(np.float32))
            done = np.logical_or(term, trunc)
            cost = step_values(info, "cost", done)
            reward = np.asarray(reward, dtype=np.float64)
            ep_ret += reward
            if cfg.intervention_penalty > 0:
                reward = reward - cfg.intervention_penalty * (report["intervention"] / amap.bound_norm) ** 2
            disc_ret = disc_ret * cfg.gamma + reward
            ret_norm.update(disc_ret[:, None])
            disc_ret[done] = 0.0
            reward = np.clip(reward / math.sqrt(float(ret_norm.var[0]) + 1e-8), -10.0, 10.0)
            if (trunc & ~term).any():  # bootstrap a time-limit end from the critic at the final observation
                cut = trunc & ~term
                final = np.stack([info["final_obs"][i] if cut[i] else obs_np[i] for i in range(N)])
                final_n = _normalised(policy, torch.from_numpy(final.astype(np.float32)))
                with torch.no_grad():
                    v_final = critic(final_n).numpy()
                    if cost_critic is not None:
                        buf_c_boot[t] = cfg.gamma * cost_critic(final_n) * torch.from_numpy(cut.astype(np.float32))
                reward = reward + cfg.gamma * v_final * cut
            buf_r[t], buf_c[t] = torch.from_numpy(reward), torch.from_numpy(cost)
            buf_done[t] = torch.from_numpy(done.astype(np.float32))
            starts = buf_done[t].clone()
            ep_cost += cost
            ep_len += 1
            violating += int((cost > 0).sum())
            stats["intervention"] += float(report["intervention"].sum())
            stats["slack_steps"] += int((report["slack"] > 1e-6).sum())
            stats["fallback_steps"] += int(report["fallback"].sum())
            stats["solver_failures"] += int(report["failed"].sum())
            success = step_values(info, "is_success", done) > 0
            for i in np.flatnonzero(done):
                finished.append((float(ep_ret[i]), float(ep_cost[i]), int(ep_len[i]), bool(success[i])))
                ep_ret[i], ep_cost[i], ep_len[i] = 0.0, 0.0, 0
            subs = [e.unwrapped for e in vec.envs]
        steps += per_iter
        bar.update(min(per_iter, cfg.total_steps - bar.n))

        # -- advantages ------------------------------------------------------------------------------
        with torch.no_grad():
            last_v = critic(_normalised(policy, torch.from_numpy(np.asarray(obs_np, dtype=np.float32))))
        adv = gae(buf_r, buf_v, buf_done, last_v, cfg.gamma, cfg.gae_lambda)
        returns = adv + buf_v
        c_returns = None
        if cost_critic is not None:  # PPO-Lagrangian: penalise the cost advantage, raise the multiplier
            assert cfg.cost_limit is not None
            with torch.no_grad():
                last_cv = cost_critic(_normalised(policy, torch.from_numpy(np.asarray(obs_np, dtype=np.float32))))
            c_adv = gae(buf_c + buf_c_boot, buf_cv, buf_done, last_cv, cfg.gamma, cfg.gae_lambda)
            c_returns = c_adv + buf_cv
            recent = [c for _, c, _, _ in finished[-max(N, 1) :]]
            ep_cost_mean = float(np.mean(recent)) if recent else 0.0
            lagrange = max(0.0, lagrange + cfg.lagrange_lr * (ep_cost_mean - cfg.cost_limit))
            adv = (adv - lagrange * c_adv) / (1.0 + lagrange)

        # -- update ----------------------------------------------------------------------------------
        clip_fracs, approx_kl, first_ratio = [], 0.0, None
        envs_per_mb = N // cfg.minibatches
        for epoch in range(cfg.epochs):
            order = rng.permutation(N)
            for k in range(cfg.minibatches):
                mb = torch.from_numpy(order[k * envs_per_mb : (k + 1) * envs_per_mb])
                means = sequence_means(policy, buf_obs[:, mb], buf_starts[:, mb], h0[mb])
                logp = gaussian_logp(buf_a[:, mb], means, log_std)
                ratio = torch.exp(logp - buf_logp[:, mb])
                if epoch == 0 and k == 0:
                    first_ratio = ratio.detach()
                a_mb = adv[:, mb]
                a_mb = (a_mb - a_mb.mean()) / (a_mb.std() + 1e-8)
                pg = torch.maximum(-a_mb * ratio, -a_mb * ratio.clamp(1 - cfg.clip, 1 + cfg.clip)).mean()
                v = critic(_normalised(policy, buf_obs[:, mb]))
                v_loss = 0.5 * ((v - returns[:, mb]) ** 2).mean()
                if cost_critic is not None and c_returns is not None:
                    cv = cost_critic(_normalised(policy, buf_obs[:, mb]))
                    v_loss = v_loss + 0.5 * ((cv - c_returns[:, mb]) ** 2).mean()
                entropy = (log_std + 0.5 * math.log(2 * math.pi * math.e)).sum()
                loss = pg + cfg.vf_coef * v_loss - cfg.ent_coef * entropy
                optim.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
                optim.step()
                with torch.no_grad():
                    clip_fracs.append(float(((ratio - 1).abs() > cfg.clip).float().mean()))
                    approx_kl = float(((ratio - 1) - torch.log(ratio)).mean())
        iteration += 1
        wall = time.perf_counter() - t_start
        recent = finished[-50:]
        train_row = {
            "EpRet": float(np.mean([r for r, _, _, _ in recent])) if recent else float("nan"),
            "EpCost": float(np.mean([c for _, c, _, _ in recent])) if recent else float("nan"),
            "success_rate": float(np.mean([s for _, _, _, s in recent])) if recent else float("nan"),
            "cost_rate": float(buf_c.mean()),
            "mean_intervention": stats["intervention"] / per_iter,
            "slack_steps": stats["slack_steps"],
            "fallback_steps": stats["fallback_steps"],
            "solver_failures": stats["solver_failures"],
            "train_violating_steps": violating,
            "steps_per_s": per_iter / max(time.perf_counter() - t_iter, 1e-9),
            "approx_kl": approx_kl,
            "clip_frac": float(np.mean(clip_fracs)),
            "first_ratio_dev": float((first_ratio - 1).abs().max()) if first_ratio is not None else 0.0,
            "std": float(torch.exp(log_std.detach()).mean()),
            "lagrange": lagrange,
        }
        log.scalars("train", train_row, steps)
        bar.set_postfix(ret=f"{train_row['EpRet']:.2f}", succ=f"{train_row['success_rate']:.2f}", viol=violating)
        row = {"env_steps": steps, "wall_s": wall, **{f"train_{k}": v for k, v in train_row.items()}}
        if steps < next_eval and iteration < iterations:
            log.row(row)
        else:  # evaluate, keep best.pt and write last.pt (what a resumed run starts from)
            next_eval = (steps // cfg.eval_every + 1) * cfg.eval_every
            policy.set_normalization(norm.mean, np.sqrt(norm.var))
            metrics = evaluate_policy(policy, cfg.env_id, cfg.eval_episodes, env_kwargs=cfg.env_kwargs)
            scalar = {k: v for k, v in metrics.items() if not isinstance(v, tuple)}
            log.scalars("eval", scalar, steps)
            row.update(scalar)
            log.row(row)
            best = save_checkpoints(
                policy, out, metrics, {"env_steps": steps, "algo": "ppo"}, best,
                {
                    "train_config": asdict(cfg), "policy": policy.state_dict(), "critic": critic.state_dict(),
                    "log_std": log_std.detach().clone(), "optim": optim.state_dict(), "norm": norm.state(),
                    "ret_norm": ret_norm.state(),
                    "cost_critic": None if cost_critic is None else cost_critic.state_dict(),
                    "steps": steps, "iteration": iteration, "wall": wall,
                    "train_violating_steps": violating, "lagrange": lagrange,
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


def _normalised(policy: LiquidBarrierPolicy, obs: Tensor) -> Tensor:
    """The critic's input: the observation under the policy's normalisation, clipped to +-10 std."""
    return ((obs - policy.obs_mean) / policy.obs_std).clamp(-10.0, 10.0)
