"""Batched differentiable QP: ``solve_qp(Q, q, G, h, lb, ub, backend=..., settings=...)``, and its numpy
twin ``solve_qp_numpy`` for control loops. Settings and status codes live in :mod:`safeliquid.qp.settings`."""

from safeliquid.qp.native import QPSolution
from safeliquid.qp.settings import DEFAULT_SETTINGS, INFEASIBLE, MAX_ITER, OPTIMAL, STATUS_NAMES, QPSettings
from safeliquid.qp.solve import BACKENDS, NumpyQPSolution, solve_qp, solve_qp_numpy
from safeliquid.qp.warmup import warmup

__all__ = [
    "BACKENDS",
    "DEFAULT_SETTINGS",
    "INFEASIBLE",
    "MAX_ITER",
    "OPTIMAL",
    "STATUS_NAMES",
    "NumpyQPSolution",
    "QPSettings",
    "QPSolution",
    "solve_qp",
    "solve_qp_numpy",
    "warmup",
]
