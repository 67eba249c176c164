"""Barrier functions and their higher-order CBF rows, derived by autograd.

A barrier is ``h(x) -> (B,)`` with ``h >= 0`` safe. For a control-affine model
with relative degree r (the first Lie derivative in which ``u`` appears), the
HOCBF chain of Xiao & Belta is

    psi_0 = h,   psi_i = d/dt psi_{i-1} + alpha_i(psi_{i-1})      (i < r: no u in it)
    constraint:  L_f psi_{r-1} + L_g psi_{r-1} u + alpha_r(psi_{r-1}) >= 0,

returned in QP form ``G u <= b`` with ``G = -L_g psi_{r-1}`` and
``b = L_f psi_{r-1} + alpha_r(psi_{r-1})``. The Lie derivatives are
``grad(psi) . f`` and ``grad(psi) . g``, computed batched with autograd and
``create_graph`` so that gradients reach learned class-K gains (BarrierNet).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from safeliquid.safety.models import ControlAffine

MAX_RELATIVE_DEGREE = 4
ClassK = Callable[[Tensor, Tensor], Tensor]  # (psi (B,), gain (B,) or scalar) -> (B,)


def linear(psi: Tensor, gain: Tensor | float) -> Tensor:
    """``alpha(psi) = gain * psi``."""
    return gain * psi


def cubic(psi: Tensor, gain: Tensor | float) -> Tensor:
    """``alpha(psi) = gain * psi^3``: gentle near the boundary, strong far from it."""
    return gain * psi**3


CLASS_K: dict[str, ClassK] = {"linear": linear, "cubic": cubic}


@dataclass
class Barrier:
    """A named safety constraint ``h(x) >= 0``.

    ``relative_degree=None`` finds it on sample states at :meth:`bind`. ``class_k``
    is a name in :data:`CLASS_K` or a callable ``(psi, gain) -> (B,)``; ``gains``
    are the default per-order gains (a learned policy passes its own).
    """

    name: str
    h: Callable[[Tensor], Tensor]
    relative_degree: int | None = None
    class_k: str | ClassK = "linear"
    gains: Sequence[float] | None = None

    def __post_init__(self) -> None:
        if not callable(self.h):
            raise TypeError(
                f"constraint {self.name!r}: h must be a callable x (B, n) -> (B,), got {type(self.h).__name__}"
            )
        self.alpha()  # an unknown class_k fails here, at construction

    def alpha(self) -> ClassK:
        if callable(self.class_k):
            return self.class_k
        if self.class_k not in CLASS_K:
            raise ValueError(
                f"constraint {self.name!r}: class_k must be one of {sorted(CLASS_K)} or a callable, "
                f"got {self.class_k!r}"
            )
        return CLASS_K[self.class_k]


def lie_derivatives(psi: Tensor, x: Tensor, fx: Tensor, gx: Tensor) -> tuple[Tensor, Tensor]:
    """``(L_f psi (B,), L_g psi (B, m))`` for ``psi (B,)`` computed from ``x`` (requires grad)."""
    if psi.requires_grad:
        (grad,) = torch.autograd.grad(psi.sum(), x, create_graph=True, allow_unused=True)
    else:
        grad = None
    if grad is None:  # psi does not depend on x (a constant barrier): all Lie derivatives vanish
        grad = torch.zeros_like(x)
    return (grad * fx).sum(-1), (grad.unsqueeze(-1) * gx).sum(1)


def find_relative_degree(model: ControlAffine, barrier: Barrier, samples: Tensor, tol: float = 1e-9) -> int:
    """The smallest r with ``L_g L_f^{r-1} h`` nonzero on some sample state ``(B, n)``; raises if none up to 4."""
    x = samples.detach().clone().requires_grad_(True)
    fx, gx = model.f(x), model.g(x)
    psi = _checked_h(barrier, x)
    for r in range(1, MAX_RELATIVE_DEGREE + 1):
        lf, lg = lie_derivatives(psi, x, fx, gx)
        if bool((lg.abs() > tol).any()):
            return r
        psi = lf
    raise ValueError(
        f"constraint {barrier.name!r}: the input does not appear in its first {MAX_RELATIVE_DEGREE} "
        f"Lie derivatives on any sample state (zero input gain everywhere?)"
    )


def _checked_h(barrier: Barrier, x: Tensor) -> Tensor:
    value = barrier.h(x)
    if not isinstance(value, Tensor) or value.shape != (x.shape[0],):
        shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
        raise ValueError(f"constraint {barrier.name!r}: h(x) must return shape ({x.shape[0]},), got {shape}")
    if not bool(torch.isfinite(value).all()):
        raise ValueError(f"constraint {barrier.name!r}: h(x) returned NaN or inf")
    return value


def hocbf_row_at(
    barrier: Barrier, xg: Tensor, fx: Tensor, gx: Tensor, gains: Tensor | Sequence[float] | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """The HOCBF constraint of ``barrier`` as ``G u <= b`` at states ``xg (B, n)`` that require grad, with
    ``f(xg)`` and ``g(xg)`` already evaluated, so that many barriers share one evaluation of the model (a
    manipulator's mass matrix is costly). ``gains``: a ``(B, r)`` tensor (learned, per sample and order), a
    sequence of r floats, or ``None`` for the barrier's defaults (1.0 each). Returns ``(G (B, m), b (B,),
    h (B,))``; ``G`` and ``b`` are differentiable in tensor gains."""
    r = barrier.relative_degree
    if r is None:
        raise ValueError(f"constraint {barrier.name!r}: relative degree unknown; build it through a ConstraintSet")
    alpha = barrier.alpha()
    if gains is None:
        gains = barrier.gains if barrier.gains is not None else [1.0] * r
    if isinstance(gains, Tensor):
        if gains.shape != (xg.shape[0], r):
            raise ValueError(
                f"constraint {barrier.name!r}: gains must have shape ({xg.shape[0]}, {r}), got {tuple(gains.shape)}"
            )
        per_order = gains.unbind(1)
    else:
        if len(gains) != r:
            raise ValueError(f"constraint {barrier.name!r}: needs {r} gains (one per HOCBF order), got {len(gains)}")
        per_order = [float(p) for p in gains]
    with torch.enable_grad():
        h = _checked_h(barrier, xg)
        psi = h
        for i in range(r - 1):
            lf, _ = lie_derivatives(psi, xg, fx, gx)
            psi = lf + alpha(psi, per_order[i])
        lf, lg = lie_derivatives(psi, xg, fx, gx)
        b = lf + alpha(psi, per_order[r - 1])
    return -lg, b, h.detach()
