"""Build any cell by name, so that policies and comparisons can swap architectures with one string."""

from __future__ import annotations

from typing import Any

from safeliquid.nn.base import Cell
from safeliquid.nn.baselines import CTRNNCell, GRUCell, LSTMCell, MLPCell, NeuralODECell
from safeliquid.nn.cfc import CfCCell
from safeliquid.nn.ltc import LTCCell
from safeliquid.nn.wiring import AutoNCP, FullyConnected, Wiring

CELLS = ("ltc", "cfc", "lstm", "gru", "mlp", "ctrnn", "node")


def make_cell(
    name: str, input_size: int, units: int = 19, outputs: int | None = None, wiring: str = "ncp", **kwargs: Any
) -> Cell:
    """A cell by name: one of :data:`CELLS`.

    ``units`` is the number of neurons (hidden size). For ``ltc`` and ``cfc``,
    ``wiring="ncp"`` builds ``AutoNCP(units, outputs)`` (``outputs`` required),
    ``"dense"`` a fully connected cell. ``outputs`` also sets the MLP's output
    size; other baselines output their hidden state. ``kwargs`` go to the cell.
    """
    if name not in CELLS:
        raise ValueError(f"unknown cell {name!r}; known cells: {', '.join(CELLS)}")
    for arg, value in (("input_size", input_size), ("units", units)):
        if not (isinstance(value, int) and value >= 1):
            raise ValueError(f"{arg} must be an integer >= 1, got {value!r}")
    if name in ("ltc", "cfc"):
        if wiring not in ("ncp", "dense"):
            raise ValueError(f"wiring must be 'ncp' or 'dense', got {wiring!r}")
        w: Wiring
        if wiring == "ncp":
            if outputs is None:
                raise ValueError("an NCP wiring needs `outputs` (the number of motor neurons)")
            w = AutoNCP(units, outputs, seed=kwargs.pop("seed", 22222))
        else:
            w = FullyConnected(units, outputs)
        if name == "ltc":
            return LTCCell(input_size, w, **kwargs)
        return CfCCell(input_size, w, **kwargs)
    if name == "mlp":
        return MLPCell(input_size, units, outputs or units, **kwargs)
    cls = {"lstm": LSTMCell, "gru": GRUCell, "ctrnn": CTRNNCell, "node": NeuralODECell}[name]
    return cls(input_size, units, **kwargs)
