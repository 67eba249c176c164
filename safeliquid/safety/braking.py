"""Braking-distance obstacle barriers for a double integrator, certified under its input bound.

A point mass ``p'' = u / mass`` (state ``[p (d), v (d)]``) whose force can reach ``F = decel * mass`` in
every direction (a box ``|u_i| <= F`` contains that disc) can always stop along a straight line: the
**backup** :func:`brake` pushes against ``v`` with ``mass * min(decel, |v| / dt)`` and, held for a control
period ``dt`` at a time, stops within

    L(|v|) = |v|^2 / (2 decel) + |v| dt / 2

of where it started (the continuous stopping distance plus at most one period's travel, an upper bound for
the final partial period). The barrier of a disc (sphere) obstacle of centre ``c`` and reach ``R`` is

    h(x) = dist(c, [p, p + w])^2 - R^2,     w = v (|v| / (2 decel) + dt / 2),

the obstacle's clearance from the **whole braking segment**, not only from ``p``. Under the backup the
segment of the next sample lies inside the current one (its start moves along it and its end does not pass
the old end), so ``h(x+) >= h(x)`` for every obstacle at once: the set ``{h_k >= 0 for all k}`` is control
invariant under the input bound, with one admissible input (the backup) that satisfies every barrier's
discrete-time condition. A simulator integrating the same force with semi-implicit Euler lags the exact
position along the acceleration, i.e. backwards along the braking segment, so the plant keeps the same
guarantee under the backup.

The barrier has relative degree 1 wherever the segment's closest point lies beyond ``p`` (``u`` enters
through ``w``), and ``L_g h = 0`` with ``L_f h >= 0`` where the closest point is ``p`` itself (moving away):
so the CBF row ``L_f h + L_g h u + alpha h >= 0`` is met by the backup for **every** class-K gain
``alpha > 0``, and learned gains need no range to stay feasible. ``h`` is continuously differentiable
(the distance to a segment is, away from the segment).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from numba import njit
from torch import Tensor

from safeliquid.safety.barriers import Barrier

_TINY = 1e-12  # keeps |v| and the projection differentiable at v = 0 (shifts h by < 1e-9)


def _dot(a: Any, b: Any) -> Any:
    """``sum(a * b)`` over the last axis, kept: ``(..., 1)``; torch or numpy."""
    return (a * b).sum(-1)[..., None]


def _parts(x: Any, center: Any, dim: int, decel: float, dt: float) -> tuple[Any, Any, Any]:
    """For states ``x (B, 2 dim)`` and centres ``(K, dim)`` (torch or numpy alike): the closest point's parameter
    ``t (B, K)`` on the braking segment, ``r (B, K, dim)`` from it to the centre, and the speed ``(B, 1, 1)``."""
    xp = np if isinstance(x, np.ndarray) else torch
    p, v = x[:, None, :dim], x[:, None, dim:]
    speed = xp.sqrt(_dot(v, v) + _TINY)
    w = v * (speed / (2.0 * decel) + 0.5 * dt)  # the braking segment (B, 1, dim)
    e = center - p
    t = xp.clip(_dot(e, w)[..., 0] / (_dot(w, w)[..., 0] + _TINY), 0.0, 1.0)
    return t, e - t[..., None] * w, speed


def braking_obstacles(
    name: str,
    centers: Sequence[Sequence[float]] | np.ndarray,
    reach: Sequence[float] | np.ndarray,
    decel: float,
    dt: float,
    dim: int = 2,
    **kw: object,
) -> list[Barrier]:
    """One braking barrier per obstacle (see the module docstring), named ``f"{name}{k}"``; ``centers (K, dim)``,
    ``reach (K,)`` (obstacle radius plus the robot's plus any margin), ``decel`` (m/s^2, ``F / mass``) and ``dt``
    (the control period, s) as the backup uses them. For a state ``[p (dim), v (dim)]``."""
    if not (decel > 0 and dt > 0):
        raise ValueError(f"braking_obstacles needs decel > 0 and dt > 0, got decel={decel}, dt={dt}")
    c = torch.as_tensor(np.asarray(centers, dtype=np.float64).reshape(-1, dim))
    rr = torch.as_tensor(np.asarray(reach, dtype=np.float64).reshape(-1))
    if c.shape[0] != rr.shape[0]:
        raise ValueError(f"braking_obstacles: {c.shape[0]} centres but {rr.shape[0]} reaches")

    def h(x: Tensor, k: int) -> Tensor:
        r = _parts(x, c[k : k + 1].to(x), dim, decel, dt)[1][:, 0]
        return r.square().sum(-1) - float(rr[k]) ** 2

    return [Barrier(f"{name}{k}", (lambda x, k=k: h(x, k)), **kw) for k in range(c.shape[0])]  # type: ignore[arg-type]


def braking_terms(
    x: Any, centers: np.ndarray, reach: np.ndarray, decel: float, dt: float, mass: float | np.ndarray
) -> tuple[Any, Any]:
    """Closed-form CBF pieces of :func:`braking_obstacles` at ``x (B, 2 d)`` (torch or numpy; the same type
    comes back): ``A (B, K, d)`` the input gain ``L_g h`` and ``L (B, K, 2)`` ``[h, L_f h]``. With
    ``r = c - (p + t w)``: ``L_f h = -2 r.v`` and ``dh/dv = -2 t ((|v|/(2 decel) + dt/2) r + v (v.r)/(2 decel |v|))``
    (the closest point's own motion drops out: ``t`` minimises the distance), ``L_g h = dh/dv / mass``
    (``mass`` one value or one per axis, as the model's)."""
    dim = x.shape[1] // 2
    if isinstance(x, np.ndarray):  # the control loop's: compiled, the same formulas (a test holds them equal)
        masses = np.broadcast_to(np.asarray(mass, np.float64), (dim,)).copy()
        return _terms_numpy(np.ascontiguousarray(x, np.float64), np.asarray(centers, np.float64).reshape(-1, dim),
                            np.asarray(reach, np.float64).reshape(-1), float(decel), float(dt), masses)  # fmt: skip
    centers, reach = torch.as_tensor(centers, dtype=x.dtype), torch.as_tensor(reach, dtype=x.dtype)
    mass = torch.as_tensor(mass, dtype=x.dtype)
    t, r, speed = _parts(x, centers, dim, decel, dt)
    v = x[:, None, dim:]
    vr = _dot(v, r)
    dh_dv = -2.0 * t[..., None] * ((speed / (2.0 * decel) + 0.5 * dt) * r + v * vr / (2.0 * decel * speed))
    h = (r * r).sum(-1) - reach * reach
    return dh_dv / mass, torch.stack([h, -2.0 * vr[..., 0]], -1)


def braking_values(x: np.ndarray, centers: np.ndarray, reach: np.ndarray, decel: float, dt: float) -> np.ndarray:
    """:func:`braking_obstacles`' values ``h (B, K)`` at ``x (B, 2 d)`` (numpy): what the sampled-data prediction
    and the environment's ``info`` need, without the terms' derivatives."""
    dim = x.shape[1] // 2
    centers = np.asarray(centers, np.float64).reshape(-1, dim)
    masses = np.ones(dim)
    return _terms_numpy(np.ascontiguousarray(x, np.float64), centers, np.asarray(reach, np.float64).reshape(-1),
                        float(decel), float(dt), masses)[1][..., 0]  # fmt: skip


@njit(cache=True, error_model="numpy")
def _terms_numpy(
    x: np.ndarray, centers: np.ndarray, reach: np.ndarray, decel: float, dt: float, mass: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """:func:`braking_terms` on numpy arrays, one state and obstacle at a time: ``A (B, K, d)``, ``L (B, K, 2)``
    (``mass (d,)``); :func:`_parts`' formulas, with its ``_TINY`` guards."""
    B, K, dim = x.shape[0], centers.shape[0], centers.shape[1]
    A = np.empty((B, K, dim))
    L = np.empty((B, K, 2))
    w = np.empty(dim)
    r = np.empty(dim)
    for b in range(B):
        vv = 0.0
        for i in range(dim):
            vv += x[b, dim + i] ** 2
        speed = np.sqrt(vv + _TINY)
        stretch = speed / (2.0 * decel) + 0.5 * dt
        ww = 0.0
        for i in range(dim):
            w[i] = x[b, dim + i] * stretch
            ww += w[i] * w[i]
        for k in range(K):
            ew = 0.0
            for i in range(dim):
                ew += (centers[k, i] - x[b, i]) * w[i]
            t = min(max(ew / (ww + _TINY), 0.0), 1.0)
            rr, vr = 0.0, 0.0
            for i in range(dim):
                r[i] = centers[k, i] - x[b, i] - t * w[i]
                rr += r[i] * r[i]
                vr += x[b, dim + i] * r[i]
            L[b, k, 0] = rr - reach[k] * reach[k]
            L[b, k, 1] = -2.0 * vr
            for i in range(dim):
                dh_dv = -2.0 * t * (stretch * r[i] + x[b, dim + i] * vr / (2.0 * decel * speed))
                A[b, k, i] = dh_dv / mass[i]
    return A, L


def brake(x: Any, decel: float, dt: float, mass: float | np.ndarray) -> Any:
    """The backup: ``u (B, d) = -mass * v * min(decel / |v|, 1 / dt)`` at ``x (B, 2 d)`` (torch or numpy; ``mass``
    one value or one per axis): full braking against the velocity, and in the last period exactly the force
    that stops (no reversal). ``mass * decel`` must be within the force bound on every axis."""
    v = x[:, x.shape[1] // 2 :]
    xp = np if isinstance(x, np.ndarray) else torch
    if xp is torch:
        mass = torch.as_tensor(mass, dtype=x.dtype)
    speed = xp.sqrt(_dot(v, v))
    return -mass * v * xp.minimum(decel / xp.maximum(speed, 0 * speed + _TINY), 0 * speed + 1.0 / dt)
