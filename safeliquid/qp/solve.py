"""The QP's two entry points: ``solve_qp`` (torch, batched, differentiable, any backend) and
``solve_qp_numpy`` (numpy, the compiled kernel called directly: the batch-1 control-loop path)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from safeliquid._checks import check_tensor
from safeliquid.qp import _kernel, backends
from safeliquid.qp.native import QPSolution, numpy_solution, raise_if_not_pd, solve_native
from safeliquid.qp.settings import DEFAULT_SETTINGS, QPSettings

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
    settings: QPSettings = DEFAULT_SETTINGS,
    warm_start: Tensor | None = None,
) -> QPSolution:
    """Solve ``min 1/2 u'Qu + q'u  s.t.  G u <= h,  lb <= u <= ub`` for a batch, differentiably.

    Shapes: ``Q (B, n, n)`` or ``(n, n)``; ``q (B, n)``; ``G (B, m, n)`` or ``(m, n)``;
    ``h (B, m)`` or ``(m,)``; ``lb``, ``ub`` ``(B, n)`` or ``(n,)``. Unbatched
    arguments are shared by the batch (their gradient is the sum over it). ``Q``
    must be positive definite. The constraint rows are solved in elastic form
    with exact penalty ``settings.penalty`` (see :mod:`safeliquid.qp.native`): an
    infeasible problem returns the least-violating ``u`` with ``status`` 1 and its
    ``slack``; bounds are hard. Gradients flow to every tensor argument.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    for name, t in zip(("Q", "q", "G", "h", "lb", "ub"), (Q, q, G, h, lb, ub), strict=True):
        if t is not None and not isinstance(t, Tensor):
            raise TypeError(
                f"{name} must be a torch.Tensor, got {type(t).__name__}; for numpy arrays call solve_qp_numpy"
            )
    if backend == "native" and warm_start is None:
        fast = _fast_forward(Q, q, G, h, lb, ub, settings)
        if fast is not None:
            return fast
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
    given = {k: t for k, t in zip(("Q", "q", "G", "h", "lb", "ub"), (Q, q, G, h, lb, ub), strict=True) if t is not None}
    dtypes = {t.dtype for t in given.values()}
    if len(dtypes) > 1:
        named = ", ".join(f"{k} {t.dtype}" for k, t in given.items())
        raise TypeError(f"all QP tensors must share one dtype (float32 or float64), got {named}")
    if dtypes - {torch.float32, torch.float64}:
        raise TypeError(f"the QP tensors must be float32 or float64, got {sorted(map(str, dtypes))}")
    if backend == "native":
        return solve_native(Q, q, G, h, lb, ub, settings, warm_start)

    raise_if_not_pd(torch.linalg.cholesky_ex(0.5 * (Q + Q.transpose(1, 2)).detach())[1] != 0)
    return backends.solve(backend, Q, q, G, h, lb, ub)


class NumpyQPSolution(NamedTuple):
    """:func:`solve_qp_numpy`'s result: ``u (B, n)``, ``slack (B, m)``, ``status (B,)`` (int8, the
    :mod:`safeliquid.qp.settings` codes) and ``lam (B, m + bounds)`` the multipliers of all rows
    (constraints, then upper bounds, then lower bounds)."""

    u: np.ndarray
    slack: np.ndarray
    status: np.ndarray
    lam: np.ndarray


_EMPTY: dict[tuple[int, np.dtype], np.ndarray] = {}
_TOLERANCES = {np.dtype(d): QPSettings.tolerances(d) for d in (np.float32, np.float64)}
_NO_WARM_START = {d: np.zeros((0, 0), dtype=d) for d in _TOLERANCES}  # the kernel's "start from lam = 0"


def _raise_named(Q: np.ndarray, q: np.ndarray, G: np.ndarray, h: np.ndarray, lb: np.ndarray, ub: np.ndarray) -> None:
    """The error :func:`solve_qp_numpy` gives for badly shaped or typed arrays, naming the argument."""
    batch, n = q.shape
    if q.dtype not in _TOLERANCES:
        raise TypeError(f"q must be float32 or float64, got {q.dtype}")
    m = G.shape[1] if G.ndim == 3 else -1
    for name, a, shape in (("Q", Q, (batch, n, n)), ("G", G, (batch, m, n)), ("h", h, (batch, m))):
        if a.shape != shape:
            raise ValueError(f"{name} must have shape {shape}, got {a.shape}")
    for name, a in (("lb", lb), ("ub", ub)):
        if a.shape not in ((batch, n), (batch, 0)):
            raise ValueError(f"{name} must have shape {(batch, n)} or be None, got {a.shape}")
    for name, a in (("Q", Q), ("G", G), ("h", h), ("lb", lb), ("ub", ub)):
        if a.dtype != q.dtype:
            raise TypeError(f"{name} must have q's dtype {q.dtype}, got {a.dtype}")
    raise AssertionError("unreachable: the fast check failed but no argument is wrong")


def _none(batch: int, dtype: np.dtype) -> np.ndarray:
    key = (batch, dtype)
    if key not in _EMPTY:
        _EMPTY[key] = np.zeros((batch, 0), dtype=dtype)
    return _EMPTY[key]


def solve_qp_numpy(
    Q: np.ndarray,
    q: np.ndarray,
    G: np.ndarray,
    h: np.ndarray,
    lb: np.ndarray | None = None,
    ub: np.ndarray | None = None,
    settings: QPSettings = DEFAULT_SETTINGS,
) -> NumpyQPSolution:
    """:func:`solve_qp`'s problem on numpy arrays through the compiled kernel, without gradients.

    Shapes (batched, every one): ``Q (B, n, n)``, ``q (B, n)``, ``G (B, m, n)``, ``h (B, m)``
    (``m`` may be 0), ``lb``, ``ub`` ``(B, n)`` or ``None``; one dtype, float32 or float64,
    C-contiguous. The same method, tolerances and statuses as :func:`solve_qp`'s native backend
    (a test holds them equal); this entry skips torch, which is what a 1 kHz loop needs.
    """
    if q.ndim != 2:
        raise ValueError(f"q must have shape (B, n), got {q.shape}")
    out = _forward_arrays(Q, q, G, h, lb, ub, settings)
    if out is None:
        _raise_named(Q, q, G, h, _none(q.shape[0], q.dtype) if lb is None else lb,
                     _none(q.shape[0], q.dtype) if ub is None else ub)  # fmt: skip
    u, slack, status, lam, _ = out
    return NumpyQPSolution(u, slack, status, lam)


def _forward_arrays(
    Q: np.ndarray, q: np.ndarray, G: np.ndarray, h: np.ndarray, lb: np.ndarray | None, ub: np.ndarray | None,
    settings: QPSettings,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int] | None:  # fmt: skip
    """The forward-only kernel on batched arrays: ``(u, slack, status, lam, iterations)``, or None when the
    ranks, dtypes or shapes do not fit (the callers then name the argument). Ranks and dtypes are tested
    here, since numba would compile a new kernel for each; the shapes inside the compiled call."""
    dtype = q.dtype
    tols = _TOLERANCES.get(dtype)
    lb = _none(q.shape[0], dtype) if lb is None else lb
    ub = _none(q.shape[0], dtype) if ub is None else ub
    if tols is None or not (
        Q.ndim == 3 and G.ndim == 3 and h.ndim == 2 and lb.ndim == 2 and ub.ndim == 2
        and Q.dtype == dtype and G.dtype == dtype and h.dtype == dtype and lb.dtype == dtype and ub.dtype == dtype
    ):  # fmt: skip
        return None
    return _kernel.forward_checked(
        Q, q, G, h, lb, ub, settings.penalty, *tols, settings.max_iter, _NO_WARM_START[dtype]
    )


def _fast_forward(
    Q: Tensor, q: Tensor, G: Tensor | None, h: Tensor | None, lb: Tensor | None, ub: Tensor | None,
    settings: QPSettings,
) -> QPSolution | None:  # fmt: skip
    """:func:`solve_qp` without the general path's checks and copies, when nothing needs them: batched,
    C-contiguous CPU tensors of one float dtype with no graph to record (the kernel checks the values). None
    otherwise, and wherever a shape or dtype is off (the general path then names the argument)."""
    if G is None or h is None or torch.jit.is_tracing():
        return None
    try:  # .numpy() refuses tensors that require grad and tensors off the CPU: both take the general path
        arrays = [None if t is None else t.numpy() for t in (Q, q, G, h, lb, ub)]
    except (AttributeError, RuntimeError, TypeError):
        return None
    for a, ndim in zip(arrays, (3, 2, 3, 2, 2, 2), strict=True):
        if a is not None and (a.ndim != ndim or not a.flags.c_contiguous):
            return None
    out = _forward_arrays(*arrays, settings)  # type: ignore[arg-type]
    if out is None:
        return None
    u, slack, status, lam, iterations = out
    return numpy_solution(u, lam, slack, status, iterations, G.shape[1])
