"""Continuous-time recurrent cells: LTC, CfC, wirings, and baselines behind one interface.

Every cell is called as ``cell(x, h, dt) -> (y, h_next)``; see :mod:`safeliquid.nn.base`.
"""

from safeliquid.nn.adjoint import ltc_odeint
from safeliquid.nn.base import Cell
from safeliquid.nn.baselines import CTRNNCell, GRUCell, LSTMCell, MLPCell, NeuralODECell
from safeliquid.nn.cfc import CfCCell
from safeliquid.nn.factory import CELLS, make_cell
from safeliquid.nn.ltc import LTCCell
from safeliquid.nn.ncps_compat import ltc_from_ncps
from safeliquid.nn.sequence import Sequence
from safeliquid.nn.wiring import NCP, AutoNCP, FullyConnected, Wiring

__all__ = [
    "CELLS",
    "NCP",
    "AutoNCP",
    "CTRNNCell",
    "Cell",
    "CfCCell",
    "FullyConnected",
    "GRUCell",
    "LSTMCell",
    "LTCCell",
    "MLPCell",
    "NeuralODECell",
    "Sequence",
    "Wiring",
    "ltc_from_ncps",
    "ltc_odeint",
    "make_cell",
]
