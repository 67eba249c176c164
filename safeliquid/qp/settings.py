"""The QP's settings and status codes: one object and one set of names, read by every path that solves."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

OPTIMAL, INFEASIBLE, MAX_ITER = 0, 1, 2
STATUS_NAMES = {OPTIMAL: "optimal", INFEASIBLE: "infeasible", MAX_ITER: "max_iter"}


@dataclass(frozen=True)
class QPSettings:
    """How :func:`~safeliquid.qp.solve_qp` and :func:`~safeliquid.qp.solve_qp_numpy` solve.

    ``penalty``: the exact penalty on the elastic rows' slack (a multiplier above it
    means the hard problem is infeasible, reported as ``INFEASIBLE``). ``max_iter``:
    active-set iterations before ``MAX_ITER``. The convergence tolerance and the
    relative regularisation of the dual's Newton steps follow the dtype
    (:meth:`tolerances`).
    """

    penalty: float = 1e4
    max_iter: int = 50

    def __post_init__(self) -> None:
        if not (np.isfinite(self.penalty) and self.penalty > 0):
            raise ValueError(f"penalty must be a finite number > 0, got {self.penalty}")
        if not (isinstance(self.max_iter, int) and self.max_iter >= 1):
            raise ValueError(f"max_iter must be an integer >= 1, got {self.max_iter!r}")

    @staticmethod
    def tolerances(dtype: torch.dtype | np.dtype | type) -> tuple[float, float]:
        """``(convergence tolerance, relative regularisation)`` for a torch or numpy dtype."""
        double = dtype == torch.float64 if isinstance(dtype, torch.dtype) else np.dtype(dtype) == np.float64
        return (1e-10, 1e-12) if double else (1e-5, 1e-7)


DEFAULT_SETTINGS = QPSettings()
