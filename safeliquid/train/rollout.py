"""Closed-loop rollouts of a controller (a policy or an expert) with the metrics and a trace for plots."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import gymnasium as gym
import numpy as np

from safeliquid.metrics import EpisodeMetrics, EpisodeRecorder, aggregate
from safeliquid.qp import MAX_ITER, warmup


class Controller(Protocol):
    """``reset(env)`` at each episode start; ``__call__(obs, env) -> action``; ``report`` after each call:
    ``intervention`` (float), ``slack`` (float, > 0 if the QP had to relax a row), ``failed`` (bool),
    ``fallback`` (bool: the safety layer sent its fallback, see :mod:`safeliquid.safety.layer`)."""

    report: dict[str, Any]

    def reset(self, env: gym.Env) -> None: ...

    def __call__(self, obs: np.ndarray, env: gym.Env) -> np.ndarray: ...


class PolicyController:
    """Drive with a :class:`~safeliquid.policies.LiquidBarrierPolicy` (its state and constraints from the env,
    and the period that elapsed since the last observation, ``step_dt``, which differs from ``dt`` only
    under sampling jitter). ``timed=False`` withholds that period: the policy assumes the nominal one."""

    def __init__(self, policy: Any, timed: bool = True) -> None:
        self.policy, self.timed, self.report = policy, timed, {}

    def reset(self, env: gym.Env) -> None:
        self.policy.reset()

    def __call__(self, obs: np.ndarray, env: gym.Env) -> np.ndarray:
        base = env.unwrapped
        u = self.policy.act(obs, base.safety_state(), base.constraints, dt=base.step_dt if self.timed else None)
        r = self.policy.last_report
        self.report = {
            "intervention": float(np.ravel(r["intervention"])[0]),
            "slack": float(np.ravel(r["slack"])[0]),
            "failed": bool(np.ravel(r["failed"])[0]),
            "fallback": bool(np.ravel(r.get("fallback", [False]))[0]),
        }
        return u


class ExpertController:
    """Drive with an environment expert (its filter's record as the report)."""

    def __init__(self, expert: Any) -> None:
        self.expert, self.report = expert, {}

    def reset(self, env: gym.Env) -> None:
        self.expert.reset(env)

    def __call__(self, obs: np.ndarray, env: gym.Env) -> np.ndarray:
        u = self.expert(env)
        rec = self.expert.last_record
        self.report = {
            "intervention": float(rec.intervention[0]),
            "slack": float(rec.slack.max()) if rec.slack.size else 0.0,
            "failed": bool(rec.status[0] == MAX_ITER),
            "fallback": bool(rec.fallback[0]),
        }
        return u


@dataclass
class Trace:
    """Per-step arrays of one episode for plots: ``state (T+1, n)``, ``barrier (T+1, K)``,
    ``obs (T, obs_dim)`` (what the controller saw), ``intervention (T,)``, ``action (T, m)``; ``names`` of the
    barriers; ``frames`` if rendered."""

    state: list[np.ndarray] = field(default_factory=list)
    barrier: list[np.ndarray] = field(default_factory=list)
    intervention: list[float] = field(default_factory=list)
    action: list[np.ndarray] = field(default_factory=list)
    obs: list[np.ndarray] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    frames: list[np.ndarray] = field(default_factory=list)


def run_episode(
    env: gym.Env, controller: Controller, seed: int, trace: bool = False, render_every: int = 0
) -> tuple[EpisodeMetrics, Trace | None]:
    """One seeded episode to its end (termination or the time limit); the control step's compute time
    (``controller(...)``) is timed per step. ``render_every > 0`` keeps every n-th frame in the trace."""
    warmup()  # the QP kernel compiled (or loaded from numba's cache) before the clock starts
    obs, info = env.reset(seed=seed)
    controller.reset(env)
    base = env.unwrapped
    rec, tr = EpisodeRecorder(), Trace(names=list(base.constraints.names)) if trace or render_every else None
    rec.start(info)
    if tr is not None:
        tr.state.append(base.safety_state())
        tr.barrier.append(base.barrier_values())
        if render_every:
            tr.frames.append(env.render())
    done, k = False, 0
    while not done:
        if tr is not None:
            tr.obs.append(np.asarray(obs))
        t0 = time.perf_counter()
        action = controller(obs, env)
        compute = time.perf_counter() - t0
        obs, reward, terminated, truncated, info = env.step(action)
        r = controller.report
        rec.step(
            reward,
            info,
            r.get("intervention", 0.0),
            r.get("slack", 0.0),
            r.get("failed", False),
            compute,
            fallback=r.get("fallback", False),
        )
        done, k = terminated or truncated, k + 1
        if tr is not None:
            tr.state.append(base.safety_state())
            tr.barrier.append(base.barrier_values())
            tr.intervention.append(r.get("intervention", 0.0))
            tr.action.append(np.asarray(action))
            if render_every and (k % render_every == 0 or done):
                tr.frames.append(env.render())
    return rec.finish(), tr


def evaluate(
    env: gym.Env,
    controller: Controller,
    episodes: int,
    first_seed: int,
    desc: str | None = None,
    per_episode: bool = False,
) -> dict:
    """``episodes`` closed-loop episodes on seeds ``first_seed ...``: the aggregated metrics of
    :func:`safeliquid.metrics.aggregate`. ``desc``: label of a tqdm bar (none if ``None``).
    ``per_episode``: also ``"per_episode"``, one dict per episode (its ``seed`` and
    :class:`~safeliquid.metrics.EpisodeMetrics` fields), so a failed seed can be replayed."""
    seeds = range(first_seed, first_seed + episodes)
    if desc is not None:
        from tqdm import tqdm

        seeds = tqdm(seeds, desc=desc, leave=False)
    results = [(seed, run_episode(env, controller, seed)[0]) for seed in seeds]
    metrics = aggregate([m for _, m in results])
    if per_episode:
        metrics["per_episode"] = [{"seed": seed, **m.to_dict()} for seed, m in results]
    return metrics
