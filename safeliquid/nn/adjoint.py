"""The LTC as a continuous-time ODE integrated by torchdiffeq, with the adjoint method as an option.

Backpropagation through the solver (:class:`~safeliquid.nn.sequence.Sequence`)
is exact for the discretised model but stores every solver stage: memory grows
with sequence length x unfolds. The adjoint method integrates the sensitivity
ODE backwards instead and stores only the state at each control step, at the
price of numerical error in the gradient (the backward pass re-integrates the
state). ``benchmarks/bench_adjoint.py`` measures both.

Between samples the input is held (zero-order hold), so each control step is
one ODE solve over normalised time s in [0, 1]: ``dv/ds = dt * f(v, x_k)``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchdiffeq import odeint, odeint_adjoint

from safeliquid._checks import check_tensor
from safeliquid.nn.base import as_column
from safeliquid.nn.ltc import LTCCell


class _Field(nn.Module):
    """``dv/ds = dt * f(v)`` for one held input; the tensors it uses are the adjoint parameters."""

    def __init__(self, cell: LTCCell, prep, drive: Tensor, dt: float | Tensor) -> None:
        super().__init__()
        self.cell, self.prep, self.drive, self.dt = cell, prep, drive, dt

    def forward(self, s: Tensor, v: Tensor) -> Tensor:
        return self.dt * self.cell.vector_field(self.prep, self.drive, v)


def ltc_odeint(
    cell: LTCCell,
    x: Tensor,
    h0: Tensor | None = None,
    timespans: Tensor | float = 1.0,
    method: str = "rk4",
    adjoint: bool = True,
) -> tuple[Tensor, Tensor]:
    """Integrate an LTC over a sequence: ``x (B, T, in)`` -> ``(y (B, T, out), h_T (B, N))``.

    ``method`` is a torchdiffeq solver; fixed-step ones (``rk4``, ``euler``,
    ``midpoint``) take ``cell.ode_unfolds`` steps per control step, adaptive ones
    (``dopri5``) their own. ``adjoint=True`` uses ``odeint_adjoint``.
    """
    if not isinstance(cell, LTCCell):
        raise TypeError(f"ltc_odeint integrates an LTCCell, got {type(cell).__name__}")
    check_tensor("x", x, ("B", "T", cell.input_size))
    batch, steps = x.shape[:2]
    h = cell.initial_state(batch, x.dtype, x.device) if h0 is None else check_tensor("h0", h0, (batch, cell.state_size))
    if isinstance(timespans, Tensor):
        check_tensor("timespans", timespans, (batch, steps))
    prep = cell.prepare()
    rec = prep.recurrent
    grid = torch.tensor([0.0, 1.0], dtype=x.dtype, device=x.device)
    fixed = method in ("rk4", "euler", "midpoint", "explicit_adams", "implicit_adams")
    options = {"step_size": 1.0 / cell.ode_unfolds} if fixed else None
    ys = []
    for t in range(steps):
        dt = as_column(timespans[:, t]) if isinstance(timespans, Tensor) else float(timespans)
        drive = cell.sensory_drive(prep, x[:, t])
        field = _Field(cell, prep, drive, dt)
        if adjoint:
            params = tuple(
                p
                for p in (rec.scale, rec.shift, rec.scatter, prep.cm, drive, dt)
                if isinstance(p, Tensor) and p.requires_grad
            )
            h = odeint_adjoint(field, h, grid, method=method, options=options, adjoint_params=params)[-1]
        else:
            h = odeint(field, h, grid, method=method, options=options)[-1]
        ys.append(cell.map_outputs(h))
    return torch.stack(ys, dim=1), h
