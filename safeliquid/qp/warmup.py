"""Compile the QP kernel ahead of the first control step.

numba compiles the kernel on its first call for each dtype and caches the machine
code next to the source; without a warm-up that first call (seconds) lands inside
the first control step of the first episode. ``make`` calls :func:`warmup` at
install time, and every rollout calls it before its clock starts (a cache hit
costs a fraction of a second).
"""

from __future__ import annotations

import time

import torch

from safeliquid.qp.solve import solve_qp, solve_qp_numpy


def warmup() -> float:
    """Compile (or load from numba's cache) every kernel entry in float64 and float32; returns seconds taken."""
    t0 = time.perf_counter()
    for dtype in (torch.float64, torch.float32):
        Q = torch.eye(2, dtype=dtype).expand(1, 2, 2).contiguous()
        q = torch.tensor([[1.0, -1.0]], dtype=dtype, requires_grad=True)
        G = torch.tensor([[[1.0, 1.0]]], dtype=dtype)
        h = torch.tensor([[0.5]], dtype=dtype)
        lb, ub = -torch.ones(1, 2, dtype=dtype), torch.ones(1, 2, dtype=dtype)
        solve_qp(Q, q, G, h, lb, ub).u.sum().backward()  # forward and backward kernels
        arrays = [t.detach().numpy() for t in (Q, q, G, h, lb, ub)]
        solve_qp_numpy(*arrays)
        solve_qp_numpy(*arrays[:4])  # without bounds
    return time.perf_counter() - t0
