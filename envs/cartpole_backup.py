"""CartPoleRail's backup controller, brake and hold, and its implicit safe set, compiled.

The rail's HOCBF set is not control invariant under the 15 N limit: a pole spinning at 10-14 rad/s pulls
the cart harder than the force can brake it (the centrifugal reaction ``m l sin(theta) theta'^2``). No
closed-form barrier of the cart alone fixes that, since how hard the cart can brake depends on the pole.
The backup instead brakes the cart towards rest, aiming the speed at the next sample at
``x' - dt clip(rate x', -decel, decel)`` with the force the model says gets it there over the period (clipped
to the limit), and then holds it there: aimed at the sample, not at the instant, the held force does not
let a spinning pole shake the cart out of rest. Its terminal
set is the cart nearly at rest (``|x'| <= rest_speed``) with room ahead to stop (``|x'| / rate`` of travel
at most), with the pole's energy
``E = 1/2 (I + m l^2) theta'^2 + m g l cos(theta)`` low enough that holding the cart takes at most 90 % of
the force (the rest covers the few hundredths of a joule the held force's work moves ``E`` by): with the
cart held (``x'' = 0``) ``E`` is conserved, and the force that holds it is
``(m l / (I + m l^2)) sin(theta) (3 m g l cos(theta) - 2 E)``, at most
``(m l / (I + m l^2)) (1.5 m g l + 2 |E|)`` in size. The implicit safe set
(:mod:`safeliquid.safety.backup_set`) is the states from which the braking rollout stays on the rail and
reaches that set; it caps the pole's energy only where the rail needs it to.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numba
import numpy as np
import torch

from safeliquid.safety import Backup

if TYPE_CHECKING:
    from safeliquid.envs.cartpole_rail import CartPole


@numba.njit(cache=True)
def accelerations_at(th: float, thd: float, u: float, p: np.ndarray) -> tuple[float, float]:
    """``(x'', theta'')`` under force ``u``: the textbook cart-pole of :class:`CartPole`, ``p`` its parameters
    ``[mc, mp, l, inertia, gravity]``."""
    mc, mp, com, inertia, grav = p[0], p[1], p[2], p[3], p[4]
    s, c = math.sin(th), math.cos(th)
    ml = mp * com
    a, b, d = mc + mp, ml * c, inertia + mp * com**2
    r1 = u + ml * s * thd**2
    r2 = ml * grav * s
    det = a * d - b * b
    return (d * r1 - b * r2) / det, (a * r2 - b * r1) / det


@numba.njit(cache=True)
def _period(
    x: float, th: float, xd: float, thd: float, u: float, p: np.ndarray, substeps: int, h: float
) -> tuple[float, float, float, float]:
    """One control period of ``substeps`` semi-implicit Euler steps of ``h`` (as CartPole.step_numpy, PyBullet)."""
    for _ in range(substeps):
        xdd, thdd = accelerations_at(th, thd, u, p)
        xd += h * xdd
        thd += h * thdd
        x += h * xd
        th += h * thd
    return x, th, xd, thd


@numba.njit(cache=True)
def rail_terms_numpy(states: np.ndarray, p: np.ndarray, rail: float) -> tuple[np.ndarray, np.ndarray]:
    """``cartpole_rail.rail_terms`` on numpy states ``(B, 4)``, compiled: ``A (B, 2, 1)``, ``L (B, 2, 3)``."""
    B = states.shape[0]
    A = np.empty((B, 2, 1))
    L = np.empty((B, 2, 3))
    for b in range(B):
        x, th, xd, thd = states[b, 0], states[b, 1], states[b, 2], states[b, 3]
        drift = accelerations_at(th, thd, 0.0, p)[0]
        gain = accelerations_at(th, thd, 1.0, p)[0] - drift
        A[b, 0, 0], A[b, 1, 0] = gain, -gain
        L[b, 0, 0], L[b, 0, 1], L[b, 0, 2] = x + rail, xd, drift
        L[b, 1, 0], L[b, 1, 1], L[b, 1, 2] = rail - x, -xd, -drift
    return A, L


@numba.njit(cache=True)
def step_states(states: np.ndarray, u: np.ndarray, p: np.ndarray, substeps: int, dt: float) -> np.ndarray:
    """``states (B, 4)`` ``[x, theta, x', theta']`` one control period on under forces ``u (B,)``: ``substeps``
    of :func:`_period` (what :meth:`CartPole.step_numpy` computes, compiled); ``p`` as :func:`accelerations_at`'s."""
    out = np.empty_like(states)
    h = dt / substeps
    for b in range(states.shape[0]):
        s = states[b]
        out[b, 0], out[b, 1], out[b, 2], out[b, 3] = _period(s[0], s[1], s[2], s[3], u[b], p, substeps, h)
    return out


@numba.njit(cache=True)
def _force(x: float, th: float, xd: float, thd: float, p: np.ndarray, substeps: int, dt: float) -> float:
    """The backup's force at one state; ``p`` also holds ``[.., force_limit, rate, decel]`` at 5..7."""
    target = xd - dt * min(max(p[6] * xd, -p[7]), p[7])
    h = dt / substeps
    v0 = _period(x, th, xd, thd, 0.0, p, substeps, h)[2]
    v1 = _period(x, th, xd, thd, p[5], p, substeps, h)[2]
    return min(max((target - v0) * p[5] / (v1 - v0), -p[5]), p[5])


@numba.njit(cache=True)
def _keeps(states: np.ndarray, p: np.ndarray, horizon: int, substeps: int, dt: float) -> np.ndarray:
    """The rollout test of :func:`safeliquid.safety.backup_set.rollout` for the cart-pole; ``p`` also holds
    ``[.., rail, margin, rest_speed, rest_energy, rest_room]`` at 8..12."""
    out = np.zeros(states.shape[0], dtype=np.bool_)
    h = dt / substeps
    ml, d = p[1] * p[2], p[3] + p[1] * p[2] ** 2
    for i in range(states.shape[0]):
        x, th, xd, thd = states[i, 0], states[i, 1], states[i, 2], states[i, 3]
        for step in range(horizon + 1):
            if min(x + p[8], p[8] - x) < p[9]:
                break
            ahead = p[8] - x if xd > 0 else x + p[8]
            energy = 0.5 * d * thd**2 + ml * p[4] * math.cos(th)
            if abs(xd) <= p[10] and ahead >= p[12] + abs(xd) / p[6] and energy <= p[11]:
                out[i] = True
                break
            if step == horizon:
                break
            u = _force(x, th, xd, thd, p, substeps, dt)
            x, th, xd, thd = _period(x, th, xd, thd, u, p, substeps, h)
    return out


@dataclass(frozen=True)
class BrakeAndHold:
    """The backup of a :class:`CartPole` on a rail ``|x| <= rail`` under ``|u| <= force_limit``, held ``dt``
    seconds (the model's ``substeps`` per period). ``rate`` (1/s) and ``decel`` (m/s^2): the braking law;
    ``rest_speed`` (m/s) and ``rest_room`` (m): the terminal set's speed and the room it keeps beyond the
    braking's travel, for the hold's creep (a spinning pole shakes a held cart by up to about a millimetre);
    ``horizon`` (periods) and ``margin`` (m): the rollout's."""

    model: CartPole
    rail: float
    force_limit: float
    dt: float
    rate: float = 5.0
    decel: float = 10.0
    rest_speed: float = 0.05
    rest_room: float = 1e-2
    horizon: int = 150
    margin: float = 1e-6

    @property
    def rest_energy(self) -> float:
        """The pole energy (J) up to which holding the cart takes at most 90 % of the force (module docstring)."""
        m = self.model
        ml, d = m.mp * m.l, m.inertia + m.mp * m.l**2
        return 0.5 * (0.9 * self.force_limit * d / ml - 1.5 * ml * m.grav)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_p", self._params())  # once: the compiled test reads it every control step

    def _params(self) -> np.ndarray:
        return np.concatenate([
            self.model.parameters,  # [mc, mp, l, inertia, gravity], as accelerations_at reads them
            [
                self.force_limit,
                self.rate,
                self.decel,
                self.rail,
                self.margin,
                self.rest_speed,
                self.rest_energy,
                self.rest_room,
            ],
        ])  # fmt: skip

    def control(self, x: Any) -> Any:
        """The braking force ``(B, 1)`` at ``x (B, 4)``, torch or numpy (the same type back): the force under which
        the model's speed at the next sample is ``x' - dt clip(rate x', -decel, decel)`` (from two predictions:
        the speed is affine in a held force up to the pole's few-milliradian response to it), clipped."""
        xp = np if isinstance(x, np.ndarray) else torch
        step = self.model.step_numpy if xp is np else self.model.step
        target = x[:, 2] - self.dt * xp.clip(self.rate * x[:, 2], -self.decel, self.decel)
        v0 = step(x, 0.0 * x[:, :1], self.dt)[:, 2]
        v1 = step(x, 0.0 * x[:, :1] + self.force_limit, self.dt)[:, 2]
        u = (target - v0) * self.force_limit / (v1 - v0)
        return xp.clip(u, -self.force_limit, self.force_limit)[:, None]

    def terminal(self, x: np.ndarray) -> np.ndarray:
        """``(B,)`` bool: the cart nearly at rest, with room ahead for the rest of its braking (under the law's
        geometric decay of the speed, ``|x'| / rate`` at most, and ``rest_room`` more), the pole's energy low
        enough to hold it."""
        m = self.model
        ahead = np.where(x[:, 2] > 0, self.rail - x[:, 0], x[:, 0] + self.rail)
        energy = 0.5 * (m.inertia + m.mp * m.l**2) * x[:, 3] ** 2 + m.mp * m.l * m.grav * np.cos(x[:, 1])
        slow = np.abs(x[:, 2]) <= self.rest_speed
        return slow & (ahead >= self.rest_room + np.abs(x[:, 2]) / self.rate) & (energy <= self.rest_energy)

    def keeps(self, x: np.ndarray) -> np.ndarray:
        """``(B,)`` bool: the compiled rollout test (the generic one's numbers, held equal by a test)."""
        substeps = self.model.substeps or 1
        return _keeps(np.ascontiguousarray(x, dtype=np.float64), self._p, self.horizon, substeps, self.dt)

    def backup(self) -> Backup:
        return Backup(self.control, self.dt, self.horizon, self.terminal, self.margin, self.keeps)


def warmup() -> None:
    """Compile (or load from numba's cache) the rollout test, ahead of the first episode (``make`` calls it)."""
    _keeps(np.zeros((1, 4)), np.ones(13), 1, 1, 0.02)
    step_states(np.zeros((1, 4)), np.zeros(1), np.ones(5), 1, 0.02)
    rail_terms_numpy(np.zeros((1, 4)), np.ones(5), 1.0)
