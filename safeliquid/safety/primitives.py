"""Ready-made barriers: obstacles (sphere, cylinder, box) around points, half-spaces, state boxes.

Each returns :class:`~safeliquid.safety.barriers.Barrier` objects whose ``h`` is
plain differentiable torch; ``points(x) -> (B, P, d)`` maps the state to the
points that must keep clear (a slice of the state for a mobile robot, a
differentiable forward-kinematics function for an arm).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from safeliquid.safety.barriers import Barrier

Points = Callable[[Tensor], Tensor]  # (B, n) -> (B, P, d)


def position(indices: Sequence[int]) -> Points:
    """The point made of state entries ``indices``: ``(B, n) -> (B, 1, len(indices))``."""
    idx = list(indices)
    return lambda x: x[:, idx].unsqueeze(1)


def _per_point(name: str, points: Points, dist: Callable[[Tensor], Tensor], **kw: object) -> list[Barrier]:
    """One barrier per point (P read from a probe call at the first evaluation is not known here, so by index)."""
    count = kw.pop("count")
    assert isinstance(count, int)
    return [
        Barrier(f"{name}[{i}]" if count > 1 else name, (lambda x, i=i: dist(points(x)[:, i])), **kw)  # type: ignore[arg-type]
        for i in range(count)
    ]


def sphere_obstacle(
    name: str,
    points: Points,
    center: Sequence[float] | Tensor,
    radius: float,
    margin: float = 0.0,
    count: int = 1,
    **kw: object,
) -> list[Barrier]:
    """Keep each of ``count`` points outside a sphere (a disc in 2-D): ``h = |p - c|^2 - (radius + margin)^2``."""
    c = torch.as_tensor(center, dtype=torch.float64)
    r = radius + margin

    def dist(p: Tensor) -> Tensor:
        return (p - c.to(p)).square().sum(-1) - r * r

    return _per_point(name, points, dist, count=count, **kw)


def cylinder_obstacle(
    name: str,
    points: Points,
    center_xy: Sequence[float],
    radius: float,
    margin: float = 0.0,
    count: int = 1,
    **kw: object,
) -> list[Barrier]:
    """A vertical cylinder (infinite height): a disc in the horizontal plane, ``h = |p_xy - c|^2 - (r + margin)^2``."""
    return sphere_obstacle(name, lambda x: points(x)[..., :2], center_xy, radius, margin, count, **kw)


def box_obstacle(
    name: str,
    points: Points,
    lower: Sequence[float],
    upper: Sequence[float],
    margin: float = 0.0,
    sharpness: float = 20.0,
    count: int = 1,
    **kw: object,
) -> list[Barrier]:
    """Keep points outside an axis-aligned box grown by ``margin``: a smooth max over the faces' outside distances.

    ``h = softmax_k(d_k)`` (log-sum-exp with ``sharpness``) of ``d = [lower - margin - p, p - upper - margin]``;
    positive outside the grown box. The smooth maximum under-estimates the true
    maximum by at most ``log(2d)/sharpness``, so the barrier is conservative.
    """
    lo = torch.as_tensor(lower, dtype=torch.float64) - margin
    hi = torch.as_tensor(upper, dtype=torch.float64) + margin

    def dist(p: Tensor) -> Tensor:
        d = torch.cat([lo.to(p) - p, p - hi.to(p)], dim=-1)
        return (torch.logsumexp(sharpness * d, dim=-1) - torch.log(torch.tensor(float(d.shape[-1])))) / sharpness

    return _per_point(name, points, dist, count=count, **kw)


def half_space(name: str, normal: Sequence[float], offset: float, **kw: object) -> Barrier:
    """``normal . x <= offset`` on the state: ``h = offset - normal . x``."""
    a = torch.as_tensor(normal, dtype=torch.float64)
    return Barrier(name, lambda x: offset - x @ a.to(x), **kw)  # type: ignore[arg-type]


def state_box(
    name: str, index: int, low: float | None = None, high: float | None = None, **kw: object
) -> list[Barrier]:
    """``low <= x[index] <= high`` (a cart rail, a joint or velocity limit) as one barrier per side."""
    out = []
    if low is not None:
        out.append(Barrier(f"{name}.low", lambda x: x[:, index] - low, **kw))  # type: ignore[arg-type]
    if high is not None:
        out.append(Barrier(f"{name}.high", lambda x: high - x[:, index], **kw))  # type: ignore[arg-type]
    if not out:
        raise ValueError(f"constraint {name!r}: give low, high or both")
    return out
