"""Adversaries: agents that try to break a safety layer, for tests and benchmarks of the guarantee.

A safety claim is only as good as the adversary that tried to break it, so these do not drive towards a
goal: they send what is most likely to leave the safe set. Each is ``reset(env, rng)`` at an episode's
start and ``__call__(env) -> action (m,) float32`` per step, reading the environment's state and
constraint set (``env.unwrapped.safety_state()``, ``env.unwrapped.constraints``) and its action space.

- :class:`RandomActions`: uniform in the action box.
- :class:`BangBang`: a random corner of the box, held for a random number of steps (builds up speed).
- :class:`TowardConstraint`: full input down the lowest barrier at the next sample (:func:`descent`): the
  fastest way into the nearest obstacle, a rail's end, a joint limit, the sphere.
- :class:`Tangent`: full input across that direction: grazing along the barrier's boundary.

Environment-specific ones (pumping a pole's energy) live with the environments
(:mod:`safeliquid.envs.adversaries`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


class Adversary:
    """Base: keeps the action bounds; subclasses write :meth:`act`."""

    name = "adversary"

    def reset(self, env: Any, rng: np.random.Generator) -> None:
        space = env.action_space
        self.low, self.high = np.asarray(space.low, np.float64), np.asarray(space.high, np.float64)
        self.rng = rng

    def act(self, env: Any) -> np.ndarray:
        raise NotImplementedError

    def __call__(self, env: Any) -> np.ndarray:
        return np.clip(self.act(env), self.low, self.high).astype(np.float32)

    def corner(self, direction: np.ndarray) -> np.ndarray:
        """The box corner (or face, where ``direction`` is 0) that ``direction (m,)`` points to."""
        return np.where(direction > 0, self.high, np.where(direction < 0, self.low, 0.5 * (self.low + self.high)))


class RandomActions(Adversary):
    name = "random"

    def act(self, env: Any) -> np.ndarray:
        return self.rng.uniform(self.low, self.high)


class BangBang(Adversary):
    """A random corner of the action box, held for ``1..max_hold`` steps (uniform)."""

    name = "bang-bang"

    def __init__(self, max_hold: int = 25) -> None:
        self.max_hold = max_hold

    def reset(self, env: Any, rng: np.random.Generator) -> None:
        super().reset(env, rng)
        self.left, self.current = 0, self.low

    def act(self, env: Any) -> np.ndarray:
        if self.left <= 0:
            self.current = self.corner(self.rng.choice([-1.0, 1.0], self.low.shape))
            self.left = int(self.rng.integers(1, self.max_hold + 1))
        self.left -= 1
        return self.current


def descent(env: Any, names: tuple[str, ...] | None = None, delta: float = 1e-3) -> np.ndarray:
    """How the lowest barrier (among those whose names start with ``names``, default all) at the next sample
    changes with the input, ``dh(x+)/du (m,)``, from the constraint set's model (forward differences about
    ``u = 0``): unlike the input gain ``L_g L_f^{r-1} h``, it does not vanish where the robot is at rest."""
    base = env.unwrapped
    cons, x = base.constraints, base.safety_state()
    h = cons.values_numpy(x[None])[0]
    if names is not None:
        h = np.where([n.startswith(names) for n in cons.names], h, np.inf)
    k = int(np.argmin(h))
    m = cons.model.control_dim
    scale = delta * (1.0 + float(np.abs(env.action_space.high).max()))
    U = np.concatenate([np.zeros((1, m)), scale * np.eye(m)])
    H = cons.predict_numpy(x, U, base.dt)[:, k]
    return (H[1:] - H[0]) / scale


class TowardConstraint(Adversary):
    """Full input down the lowest barrier (:func:`descent`); ``names`` (prefixes) restricts which barriers
    count, e.g. ``("joint",)`` to ram the joint limits."""

    name = "toward-constraint"

    def __init__(self, names: tuple[str, ...] | None = None, label: str | None = None) -> None:
        self.names = names
        if label:
            self.name = label

    def act(self, env: Any) -> np.ndarray:
        return self.corner(-descent(env, self.names))


class Tangent(Adversary):
    """Full input mostly across the lowest barrier's descent (a random side, kept for the episode) and partly
    down it (``inward``): the robot spirals in and grazes the boundary instead of meeting it head on."""

    name = "tangent"

    def __init__(self, inward: float = 0.3) -> None:
        self.inward = inward

    def reset(self, env: Any, rng: np.random.Generator) -> None:
        super().reset(env, rng)
        self.side = rng.standard_normal(self.low.shape)

    def act(self, env: Any) -> np.ndarray:
        a = descent(env)
        norm = float(np.linalg.norm(a))
        if norm < 1e-12:
            return self.corner(self.side)
        across = self.side - a * (self.side @ a) / norm**2
        across = across / max(float(np.linalg.norm(across)), 1e-12) - self.inward * a / norm
        return 0.5 * (self.high - self.low) * across / max(float(np.abs(across).max()), 1e-12)


GENERIC = (RandomActions, BangBang, TowardConstraint, Tangent)


@dataclass
class AttackResult:
    """What an adversary achieved over ``steps`` environment steps: ``violating_steps`` (``cost > 0``),
    ``contacts``, the lowest barrier value ``min_h``; under a :class:`~safeliquid.safety.SafetyFilterWrapper`
    also ``infeasible`` (QP not optimal), ``fallbacks`` (the layer's reported fallback) and
    ``unreported_infeasible`` (not optimal without a fallback: must be 0)."""

    steps: int = 0
    episodes: int = 0
    violating_steps: int = 0
    contacts: int = 0
    min_h: float = float("inf")
    infeasible: int = 0
    fallbacks: int = 0
    unreported_infeasible: int = 0

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def attack(env: Any, adversary: Adversary, steps: int, seed: int = 0) -> AttackResult:
    """Run ``adversary`` on ``env`` (wrapped or not) for ``steps`` steps, resetting at episode ends with seeds
    ``seed, seed + 1, ...``; the adversary's own random stream is seeded from ``seed`` too."""
    out = AttackResult()
    rng = np.random.default_rng(seed)
    episode = seed
    env.reset(seed=episode)
    adversary.reset(env, rng)
    out.episodes = 1
    for _ in range(steps):
        _, _, terminated, truncated, info = env.step(adversary(env))
        out.steps += 1
        out.violating_steps += int(info["cost"] > 0)
        out.contacts += int(bool(info.get("contact", False)))
        out.min_h = min(out.min_h, float(info["barrier_min_h"]))
        if "filter/solver_status" in info:
            bad = info["filter/solver_status"] != "optimal"
            out.infeasible += int(bad)
            out.fallbacks += int(info["filter/fallback"])
            out.unreported_infeasible += int(bad and not info["filter/fallback"])
        if terminated or truncated:
            episode += 1
            env.reset(seed=episode)
            adversary.reset(env, rng)
            out.episodes += 1
    return out
