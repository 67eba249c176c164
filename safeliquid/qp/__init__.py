"""Batched differentiable QP: ``solve_qp(Q, q, G, h, lb, ub, backend=...)``."""

from safeliquid.qp.native import INFEASIBLE, MAX_ITER, OPTIMAL, STATUS_NAMES, QPSolution
from safeliquid.qp.solve import BACKENDS, solve_qp

__all__ = ["BACKENDS", "INFEASIBLE", "MAX_ITER", "OPTIMAL", "STATUS_NAMES", "QPSolution", "solve_qp"]
