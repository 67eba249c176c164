"""Safety and task metrics: one definition used by training, evaluation, the CLI and the benchmarks.

Per episode (:class:`EpisodeMetrics`, built by :class:`EpisodeRecorder` from the
steps of one rollout) and aggregated over episodes (:func:`aggregate`, with 95%
confidence intervals). Names follow safety-gymnasium / OmniSafe where they
overlap: ``EpRet``, ``EpCost`` (sum of ``info["cost"]``), ``EpLen``, cost rate
(total cost / total steps); the failure rate (share of episodes with any
violation) and the intervention ``|u_safe - u_raw|`` follow safe-control-gym.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

SLACK_TOL = 1e-6  # a row counts as relaxed (slack step) above this; the QP's own tolerance is ~1e-10


@dataclass
class EpisodeMetrics:
    """One episode. ``min_barrier`` is the smallest ``h`` seen (>= 0 safe); ``deepest_violation`` is
    ``min(0, min_barrier)``; ``violating_steps`` counts steps with ``cost > 0``; ``unguarded_contacts``
    counts steps where the simulator reports a contact (``info["contact"]``) while every barrier is
    still >= 0: a gap in the constraints themselves, which no safety layer on them can close.
    ``fallback_steps`` counts steps where the safety layer sent its declared fallback (its backup
    controller, or the least-violating input) instead of a solution meeting every row. ``path_length`` is
    the distance the robot's task-space position (``info["position"]``) travelled, from the reset's position
    (NaN where the environment reports no position)."""

    success: bool
    ep_ret: float
    ep_len: int
    ep_cost: float
    violating_steps: int
    unguarded_contacts: int
    deepest_violation: float
    min_barrier: float
    mean_intervention: float
    max_intervention: float
    slack_steps: int
    solver_failures: int
    mean_step_ms: float
    p99_step_ms: float
    fallback_steps: int = 0
    path_length: float = math.nan

    def to_dict(self) -> dict[str, float | int | bool]:
        return asdict(self)


@dataclass
class EpisodeRecorder:
    """Collects what :class:`EpisodeMetrics` needs, one :meth:`step` per control step."""

    rewards: list[float] = field(default_factory=list)
    costs: list[float] = field(default_factory=list)
    unguarded: list[bool] = field(default_factory=list)
    barriers: list[float] = field(default_factory=list)
    interventions: list[float] = field(default_factory=list)
    slack: list[bool] = field(default_factory=list)
    failures: list[bool] = field(default_factory=list)
    fallbacks: list[bool] = field(default_factory=list)
    step_s: list[float] = field(default_factory=list)
    positions: list[np.ndarray] = field(default_factory=list)
    success: bool = False

    def start(self, info: dict) -> None:
        """The reset's ``info``: where the path starts (if it carries ``position``)."""
        if "position" in info:
            self.positions.append(np.asarray(info["position"], dtype=np.float64))

    def step(
        self,
        reward: float,
        info: dict,
        intervention: float = 0.0,
        slack: float = 0.0,
        solver_failed: bool = False,
        compute_s: float = 0.0,
        fallback: bool = False,
    ) -> None:
        """Record one step from the environment's ``info`` (``cost``, ``barrier_min_h``, ``is_success``)
        and the safety layer's report (``intervention``, ``slack``, whether the solve failed, whether it
        sent its fallback)."""
        for key in ("cost", "barrier_min_h"):
            if key not in info:
                raise KeyError(f"info must carry {key!r} (a safeliquid environment provides it); got {sorted(info)}")
        self.rewards.append(float(reward))
        self.costs.append(float(info["cost"]))
        self.unguarded.append(bool(info.get("contact", False)) and float(info["barrier_min_h"]) >= 0.0)
        self.barriers.append(float(info["barrier_min_h"]))
        self.interventions.append(float(intervention))
        self.slack.append(slack > SLACK_TOL)
        self.failures.append(bool(solver_failed))
        self.fallbacks.append(bool(fallback))
        self.step_s.append(float(compute_s))
        self.success = bool(info.get("is_success", False))
        if "position" in info:
            self.positions.append(np.asarray(info["position"], dtype=np.float64))

    def finish(self) -> EpisodeMetrics:
        if not self.rewards:
            raise ValueError("an episode needs at least one step")
        min_h = float(np.min(self.barriers))
        ms = np.asarray(self.step_s) * 1e3
        return EpisodeMetrics(
            success=self.success,
            ep_ret=float(np.sum(self.rewards)),
            ep_len=len(self.rewards),
            ep_cost=float(np.sum(self.costs)),
            violating_steps=int(np.sum(np.asarray(self.costs) > 0)),
            unguarded_contacts=int(np.sum(self.unguarded)),
            deepest_violation=min(0.0, min_h),
            min_barrier=min_h,
            mean_intervention=float(np.mean(self.interventions)),
            max_intervention=float(np.max(self.interventions)),
            slack_steps=int(np.sum(self.slack)),
            solver_failures=int(np.sum(self.failures)),
            mean_step_ms=float(ms.mean()),
            p99_step_ms=float(np.percentile(ms, 99)),
            fallback_steps=int(np.sum(self.fallbacks)),
            path_length=self._path_length(),
        )

    def _path_length(self) -> float:
        if len(self.positions) < 2:
            return math.nan
        return float(np.linalg.norm(np.diff(np.stack(self.positions), axis=0), axis=-1).sum())


def proportion_ci(successes: float, n: float, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a proportion (sensible at 0 and 1, unlike the normal approximation); it holds
    the proportion itself (at k = n the formula's upper end rounds to 1 - 1e-16). The counts may be effective
    ones (a clustered sample's ``k / deff`` of ``n / deff``)."""
    if n == 0:
        return (math.nan, math.nan)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (min(p, max(0.0, centre - half)), max(p, min(1.0, centre + half)))


def ratio_ci(num: np.ndarray, den: np.ndarray, z: float = 1.96) -> tuple[float, float]:
    """Interval of the pooled rate ``sum(num) / sum(den)`` over episodes (delta method), clipped to [0, 1]:
    the cost rate weights every step equally, so its interval must be about the same quantity."""
    n = len(num)
    rate = float(num.sum() / den.sum())
    if n < 2:
        return (rate, rate)
    resid = num - rate * den
    half = z * math.sqrt(float((resid**2).sum()) / (n * (n - 1))) / float(den.mean())
    return (max(0.0, rate - half), min(1.0, rate + half))


def aggregate(episodes: list[EpisodeMetrics]) -> dict[str, float | int | tuple[float, float]]:
    """Over episodes: ``success_rate``, ``failure_rate`` (any violation), ``cost_rate`` (cost per step),
    means of the per-episode quantities, extremes of the safety ones, and 95% intervals (``*_ci``)."""
    if not episodes:
        raise ValueError("aggregate needs at least one episode")
    n = len(episodes)
    success = sum(e.success for e in episodes)
    failed = sum(e.violating_steps > 0 for e in episodes)
    steps = sum(e.ep_len for e in episodes)
    costs = np.array([e.ep_cost for e in episodes])
    return {
        "episodes": n,
        "success_rate": success / n,
        "success_rate_ci": proportion_ci(success, n),
        "failure_rate": failed / n,
        "failure_rate_ci": proportion_ci(failed, n),
        "cost_rate": float(costs.sum() / steps),
        "cost_rate_ci": ratio_ci(costs, np.array([e.ep_len for e in episodes], dtype=float)),
        "EpRet": float(np.mean([e.ep_ret for e in episodes])),
        "EpCost": float(costs.mean()),
        "EpLen": float(np.mean([e.ep_len for e in episodes])),
        "violating_steps": int(sum(e.violating_steps for e in episodes)),
        "unguarded_contacts": int(sum(e.unguarded_contacts for e in episodes)),
        "deepest_violation": float(min(e.deepest_violation for e in episodes)),
        "min_barrier": float(min(e.min_barrier for e in episodes)),
        "mean_intervention": float(np.mean([e.mean_intervention for e in episodes])),
        "max_intervention": float(max(e.max_intervention for e in episodes)),
        "slack_steps": int(sum(e.slack_steps for e in episodes)),
        "solver_failures": int(sum(e.solver_failures for e in episodes)),
        "fallback_steps": int(sum(e.fallback_steps for e in episodes)),
        "mean_step_ms": float(np.mean([e.mean_step_ms for e in episodes])),
        "p99_step_ms": float(max(e.p99_step_ms for e in episodes)),  # the worst episode's p99
    }
