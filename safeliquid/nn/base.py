"""The one interface every recurrent cell in safeliquid implements.

``cell(x, h, dt) -> (y, h_next)`` advances the cell by one control step:
``x: (B, input_size)``, ``h: (B, state_size)`` (or ``None`` for the initial
state), ``dt``: a positive float or a ``(B,)`` tensor (irregular sampling,
one step length per sample); ``y: (B, output_size)``, ``h_next: (B, state_size)``.

Cells whose state is several tensors (LSTM) pack them into one ``(B, state_size)``
tensor so that policies, checkpoints and sequence wrappers treat every cell alike.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from safeliquid._checks import check_dt, check_tensor


class Cell(nn.Module):
    """Base class: validation in :meth:`forward`, the maths in :meth:`step`.

    Subclasses set ``input_size``, ``state_size``, ``output_size`` and implement
    :meth:`step`. :meth:`prepare` computes what depends only on the parameters
    (reparametrised weights, gathered synapse tables) so that a sequence runs it
    once rather than once per time step.
    """

    input_size: int
    state_size: int
    output_size: int
    continuous_time: bool = False

    def prepare(self) -> Any:
        """Parameter-only precomputation shared by all steps of a sequence (``None`` if unused)."""
        return None

    def step(self, prep: Any, x: Tensor, h: Tensor, dt: float | Tensor) -> tuple[Tensor, Tensor]:
        """Unchecked step: ``x (B, in)``, ``h (B, state)``, ``dt`` float or ``(B,)`` -> ``(y (B, out), h_next)``."""
        raise NotImplementedError

    def sequence(self, prep: Any, x: Tensor, h: Tensor, timespans: float | Tensor) -> tuple[Tensor, Tensor]:
        """Unchecked sequence: ``x (B, T, in)``, ``h (B, state)``, ``timespans`` float or ``(B, T)``
        -> ``(y (B, T, out), h_T (B, state))``. Cells with a faster whole-sequence path override it."""
        ys = []
        for t in range(x.shape[1]):
            dt = timespans[:, t] if isinstance(timespans, Tensor) else timespans
            y, h = self.step(prep, x[:, t], h, dt)
            ys.append(y)
        return torch.stack(ys, dim=1), h

    def initial_state(self, batch: int, dtype: torch.dtype | None = None, device: Any = None) -> Tensor:
        """The zero state, shape ``(batch, state_size)``."""
        p = next(self.parameters(), None)
        dtype = dtype or (p.dtype if p is not None else torch.get_default_dtype())
        device = device or (p.device if p is not None else None)
        return torch.zeros(batch, self.state_size, dtype=dtype, device=device)

    def forward(self, x: Tensor, h: Tensor | None = None, dt: float | Tensor = 1.0) -> tuple[Tensor, Tensor]:
        """One checked step; see the module docstring for shapes. Raises ``ValueError`` on bad input."""
        check_tensor("x", x, ("B", self.input_size))
        batch = x.shape[0]
        if h is None:
            h = self.initial_state(batch, x.dtype, x.device)
        else:
            check_tensor("h", h, (batch, self.state_size))
        dt = check_dt(dt, batch)
        p = next(self.parameters(), None)
        if p is not None and (x.dtype != p.dtype or h.dtype != p.dtype):
            raise TypeError(
                f"x is {x.dtype} and h is {h.dtype} but the cell's parameters are {p.dtype}; "
                f"convert the inputs (x.to({p.dtype})) or the cell (cell.to(torch.float64))"
            )
        return self.step(self.prepare(), x, h, dt)

    def extra_repr(self) -> str:
        return f"input_size={self.input_size}, state_size={self.state_size}, output_size={self.output_size}"


def as_column(dt: float | Tensor) -> float | Tensor:
    """A per-sample ``(B,)`` step as ``(B, 1)`` so it broadcasts over features; floats pass through."""
    return dt.unsqueeze(-1) if isinstance(dt, Tensor) else dt
