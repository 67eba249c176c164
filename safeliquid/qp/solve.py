"""One function for the batched QP, whatever the backend: ``solve_qp``."""

from __future__ import annotations

import torch
from torch import Tensor

from safeliquid._checks import check_tensor
from safeliquid.qp.native import QPSolution, _raise_if_not_pd, solve_native

BACKENDS = ("native", "qpth", "cvxpy")


def _batched(name: str, x: Tensor | None, batch: int, tail: tuple[int, ...], finite: bool) -> Tensor | None:
    """Expand a shared (unbatched) parameter to the batch; gradients then sum over the batch."""
    if x is None:
        return None
    if x.dim() == len(tail):
        check_tensor(name, x, tail, finite)
        return x.expand(batch, *tail)
    check_tensor(name, x, (batch, *tail), finite)
    return x


def solve_qp(
    Q: Tensor,
    q: Tensor,
    G: Tensor | None = None,
    h: Tensor | None = None,
    lb: Tensor | None = None,
    ub: Tensor | None = None,
    *,
    backend: str = "native",
    penalty: float = 1e4,
    max_iter: int = 50,
    warm_start: Tensor | None = None,
) -> QPSolution:
    """Solve ``min 1/2 u'Qu + q'u  s.t.  G u <= h,  lb <= u <= ub`` for a batch, differentiably.

    Shapes: ``Q (B, n, n)`` or ``(n, n)``; ``q (B, n)``; ``G (B, m, n)`` or ``(m, n)``;
    ``h (B, m)`` or ``(m,)``; ``lb``, ``ub`` ``(B, n)`` or ``(n,)``. Unbatched
    arguments are shared by the batch (their gradient is the sum over it). ``Q``
    must be positive definite. The constraint rows are solved in elastic form
    with exact penalty ``penalty`` (see :mod:`safeliquid.qp.native`): an
    infeasible problem returns the least-violating ``u`` with ``status`` 1 and its
    ``slack``; bounds are hard. Gradients flow to every tensor argument.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    # On CPU the native kernel checks values (NaN/inf, lb <= ub, Q > 0) in one compiled pass.
    kernel = backend == "native" and q.device.type == "cpu" and not torch.jit.is_tracing()
    finite = not kernel
    check_tensor("q", q, ("B", "n"), finite)
    batch, n = q.shape
    Q = _batched("Q", Q, batch, (n, n), finite)
    if G is None:
        G = q.new_zeros(batch, 0, n)
        h = q.new_zeros(batch, 0)
    else:
        if h is None:
            raise ValueError("h is required when G is given (constraints G u <= h)")
        m = G.shape[-2] if G.dim() >= 2 else -1
        G = _batched("G", G, batch, (m, n), finite)
        h = _batched("h", h, batch, (m,), finite)
    lb = _batched("lb", lb, batch, (n,), finite)
    ub = _batched("ub", ub, batch, (n,), finite)
    if not kernel and lb is not None and ub is not None and bool((lb > ub).any()):
        raise ValueError("lb must not exceed ub (the input bounds are hard constraints)")
    dtypes = {t.dtype for t in (Q, q, G, h, lb, ub) if t is not None}
    if len(dtypes) > 1:
        raise TypeError(f"all QP tensors must share one dtype, got {sorted(map(str, dtypes))}")
    if not penalty > 0:
        raise ValueError(f"penalty must be positive, got {penalty}")
    if backend == "native":
        return solve_native(Q, q, G, h, lb, ub, penalty, max_iter, warm_start)
    from safeliquid.qp import backends

    _raise_if_not_pd(torch.linalg.cholesky_ex(0.5 * (Q + Q.transpose(1, 2)).detach())[1] != 0)
    return backends.solve(backend, Q, q, G, h, lb, ub)
