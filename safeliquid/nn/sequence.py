"""Run any cell over a sequence: backpropagation through time through the solver."""

from __future__ import annotations

from torch import Tensor, nn

from safeliquid._checks import check_tensor
from safeliquid.nn.base import Cell


class Sequence(nn.Module):
    """``Sequence(cell)(x (B, T, in), h0 (B, state) | None, timespans (B, T) | float) -> (y (B, T, out), h_T)``.

    ``timespans`` are the elapsed times between consecutive samples, per sample
    (irregular sampling); a float applies to every step. The cell's
    parameter-only work (:meth:`Cell.prepare`) runs once per sequence.
    """

    def __init__(self, cell: Cell) -> None:
        super().__init__()
        self.cell = cell

    def forward(self, x: Tensor, h0: Tensor | None = None, timespans: Tensor | float = 1.0) -> tuple[Tensor, Tensor]:
        cell = self.cell
        check_tensor("x", x, ("B", "T", cell.input_size))
        batch, steps = x.shape[:2]
        h = (
            cell.initial_state(batch, x.dtype, x.device)
            if h0 is None
            else check_tensor("h0", h0, (batch, cell.state_size))
        )
        if isinstance(timespans, Tensor):
            check_tensor("timespans", timespans, (batch, steps))
            if not bool((timespans > 0).all()):
                raise ValueError("timespans must be positive for every sample and step")
        elif not (isinstance(timespans, (int, float)) and timespans > 0):
            raise ValueError(f"timespans must be a positive float or a (B, T) tensor, got {timespans!r}")
        else:
            timespans = float(timespans)
        return cell.sequence(cell.prepare(), x, h, timespans)
