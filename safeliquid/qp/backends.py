"""Reference backends behind ``solve_qp``: qpth (batched interior point) and cvxpy (cvxpylayers).

Both are optional: ``pip install 'safeliquid[reference]'`` for cvxpylayers and
``pip install --no-deps qpth==0.0.18`` for qpth (its metadata pins ``numpy<2``). They solve the hard
problem (no elastic slack; an infeasible problem gives whatever the solver
returns, flagged by its residual) and return no multipliers.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import torch
from torch import Tensor

from safeliquid.qp.native import QPSolution, residual_status, stack_bounds


def _require(module: str, install: str) -> Any:
    try:
        return __import__(module, fromlist=["_"])
    except ImportError as e:
        raise ImportError(f"this backend needs the optional package {module!r}: {install}") from e


def solve(backend: str, Q: Tensor, q: Tensor, G: Tensor, h: Tensor, lb: Tensor | None, ub: Tensor | None) -> QPSolution:
    """Solve a checked batch with ``backend`` (``"qpth"`` or ``"cvxpy"``); shapes as in ``solve_qp``."""
    Q = 0.5 * (Q + Q.transpose(1, 2))
    G_all, h_all = stack_bounds(G, h, lb, ub)
    if backend == "qpth":
        # qpth 0.0.18 pins numpy<2 in its metadata but runs with numpy 2: install it without its deps.
        qp = _require("qpth.qp", "pip install --no-deps qpth==0.0.18")
        empty = torch.empty(0, dtype=q.dtype)
        u = qp.QPFunction(verbose=-1, eps=1e-12, maxIter=50, check_Q_spd=False)(Q, q, G_all, h_all, empty, empty)
    elif backend == "cvxpy":
        layer = _cvxpy_layer(q.shape[1], G_all.shape[1])
        (u,) = layer(
            torch.linalg.cholesky(Q).transpose(1, 2),
            q,
            G_all,
            h_all,
            solver_args={"eps": 1e-12, "max_iters": 100_000},
        )
        u = u.to(q.dtype)  # diffcp computes in float64
    else:
        raise ValueError(f"unknown reference backend {backend!r}")
    converged = torch.ones(q.shape[0], dtype=torch.bool)
    slack, status = residual_status(u, G, h, converged)
    return QPSolution(u=u, lam=None, slack=slack, status=status, iterations=0)


@cache
def _cvxpy_layer(n: int, m: int) -> Any:
    """A cvxpylayers layer for ``min 1/2 |L' u|^2 + q'u s.t. G u <= h`` (``Q = L L'``, DPP form)."""
    cp = _require("cvxpy", "pip install cvxpy")
    layers = _require("cvxpylayers.torch", "pip install 'safeliquid[reference]'")
    u = cp.Variable(n)
    Lt, q, G, h = cp.Parameter((n, n)), cp.Parameter(n), cp.Parameter((m, n)), cp.Parameter(m)
    prob = cp.Problem(cp.Minimize(0.5 * cp.sum_squares(Lt @ u) + q @ u), [G @ u <= h])
    return layers.CvxpyLayer(prob, parameters=[Lt, q, G, h], variables=[u])
