"""A set of safety constraints for one model: barriers (rows of the QP) and input bounds."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from safeliquid._checks import check_tensor
from safeliquid.safety.barriers import Barrier, find_relative_degree, hocbf_row_at
from safeliquid.safety.models import ControlAffine


class ConstraintSet:
    """Barriers ``h_k(x) >= 0`` and input bounds ``u_min <= u <= u_max`` for ``model``, validated at construction.

    ``samples (B, n)``: states on which each barrier is checked (shape, finiteness,
    relative degree, non-vanishing input gain ``L_g L_f^{r-1} h``); errors name the
    constraint. Input bounds are hard bounds of the QP, not barriers.
    """

    def __init__(
        self,
        model: ControlAffine,
        barriers: Sequence[Barrier],
        samples: Tensor,
        u_min: Tensor | Sequence[float] | None = None,
        u_max: Tensor | Sequence[float] | None = None,
    ) -> None:
        check_tensor("samples", samples, ("B", model.state_dim))
        model.check(samples)
        names = [b.name for b in barriers]
        if len(set(names)) != len(names):
            raise ValueError(f"constraint names must be unique, got {names}")
        self.model = model
        self.barriers = list(barriers)
        for b in self.barriers:
            found = find_relative_degree(model, b, samples)
            if b.relative_degree is None:
                b.relative_degree = found
            elif b.relative_degree != found:
                raise ValueError(
                    f"constraint {b.name!r}: declared relative degree {b.relative_degree}, "
                    f"but the input first appears in derivative {found} on the sample states"
                )
            if b.gains is not None and len(b.gains) != b.relative_degree:
                raise ValueError(f"constraint {b.name!r}: needs {b.relative_degree} gains, got {len(b.gains)}")
            if b.gains is not None and not all(g > 0 for g in b.gains):
                raise ValueError(f"constraint {b.name!r}: class-K gains must be positive, got {list(b.gains)}")
        m = model.control_dim
        self.u_min = None if u_min is None else torch.as_tensor(u_min, dtype=samples.dtype).reshape(m)
        self.u_max = None if u_max is None else torch.as_tensor(u_max, dtype=samples.dtype).reshape(m)
        if self.u_min is not None and self.u_max is not None and bool((self.u_min > self.u_max).any()):
            raise ValueError(f"u_min must not exceed u_max, got {self.u_min.tolist()} > {self.u_max.tolist()}")

    @property
    def names(self) -> list[str]:
        return [b.name for b in self.barriers]

    @property
    def gain_count(self) -> int:
        """How many class-K gains a learned policy must output: one per barrier and HOCBF order."""
        return sum(b.relative_degree or 0 for b in self.barriers)

    def values(self, x: Tensor) -> Tensor:
        """Barrier values ``h_k(x)``, shape ``(B, K)`` (>= 0 safe)."""
        return torch.stack([b.h(x) for b in self.barriers], dim=1)

    def rows(self, x: Tensor, gains: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """All HOCBF rows at ``x (B, n)``: ``(G (B, K, m), b (B, K), h (B, K))`` with ``G u <= b`` safe.

        ``gains (B, gain_count)``: learned gains in barrier order (each barrier's r
        orders consecutive); ``None`` uses each barrier's defaults.
        """
        if gains is not None and gains.shape != (x.shape[0], self.gain_count):
            raise ValueError(f"gains must have shape ({x.shape[0]}, {self.gain_count}), got {tuple(gains.shape)}")
        Gs, bs, hs = [], [], []
        start = 0
        with torch.enable_grad():
            xg = x.detach().clone().requires_grad_(True)
            fx, gx = self.model.f(xg), self.model.g(xg)  # once for every barrier
            for bar in self.barriers:
                r = bar.relative_degree or 0
                g = None if gains is None else gains[:, start : start + r]
                G, b, h = hocbf_row_at(bar, xg, fx, gx, g)
                Gs.append(G)
                bs.append(b)
                hs.append(h)
                start += r
        return torch.stack(Gs, 1), torch.stack(bs, 1), torch.stack(hs, 1)
