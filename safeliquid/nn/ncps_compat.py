"""Load a model of the reference library ncps (1.0.x) into safeliquid."""

from __future__ import annotations

import torch
from torch import nn

from safeliquid.nn.ltc import POSITIVE, LTCCell, inverse_softplus
from safeliquid.nn.wiring import Wiring


def ltc_from_ncps(model: nn.Module, solver: str = "fused") -> LTCCell:
    """An :class:`LTCCell` with the wiring and parameters of an ``ncps.torch.LTC`` or ``LTCCell``.

    With the same ``ode_unfolds`` it reproduces ncps's outputs (fused solver).
    ncps applies softplus to the positive parameters when
    ``implicit_param_constraints=True`` (the LTC default) and uses them raw
    otherwise; either way the loaded cell computes the same conductances.
    """
    cell = getattr(model, "rnn_cell", model)
    if type(cell).__name__ != "LTCCell" or not hasattr(cell, "_wiring"):
        raise TypeError(f"expected an ncps.torch.LTC or ncps.torch.LTCCell, got {type(model).__name__}")
    if getattr(model, "use_mixed", False):
        raise ValueError("ncps LTC with mixed_memory=True (an extra LSTM) has no safeliquid equivalent")
    ref = cell._wiring
    wiring = Wiring.from_adjacency(ref.adjacency_matrix, ref.sensory_adjacency_matrix, ref.output_dim)
    ours = LTCCell(
        ref.input_dim,
        wiring,
        solver=solver,
        ode_unfolds=cell._ode_unfolds,
        input_mapping=cell._input_mapping if cell._input_mapping in ("affine", "linear") else None,
        output_mapping=cell._output_mapping if cell._output_mapping in ("affine", "linear") else None,
        epsilon=cell._epsilon,
    )
    src = dict(cell.named_parameters())
    ours = ours.to(src["gleak"].dtype)  # before copying, so float64 parameters stay float64
    implicit = cell._implicit_param_constraints
    with torch.no_grad():
        for name, p in ours.named_parameters():
            value = src[name].detach().to(p.dtype)
            if name in POSITIVE and not implicit:
                if (value <= 0).any():
                    raise ValueError(f"ncps parameter {name} has non-positive entries; cannot represent them")
                value = inverse_softplus(value)
            p.copy_(value)
    return ours
