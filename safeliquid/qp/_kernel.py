"""The native QP's CPU kernel: the dual active-set method of :mod:`safeliquid.qp.native`, compiled by numba.

Same algorithm and tolerances as the batched-torch version there, but one problem
at a time in compiled loops: safety-filter QPs are tiny (n <= ~12, m <= ~64), so
per-problem work is a few thousand flops and a vectorised lockstep over the batch
pays for dense ``(B, m, m)`` masking and iterations set by the slowest problem.
Every array is per batch element; all dtypes follow the inputs (float32/float64).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from safeliquid.qp.settings import INFEASIBLE, MAX_ITER, OPTIMAL

NOT_POSITIVE_DEFINITE = 3  # kernel-internal: raised as a ValueError by solve_checked, never returned

# Reassociation and fused multiply-add only: never the no-NaN/no-inf assumptions, since
# the bound rows use inf as the multipliers' upper bound and the input check tests finiteness.
_FAST = {"fastmath": {"reassoc", "contract", "arcp", "nsz"}, "error_model": "numpy", "cache": True}


@njit(**_FAST)
def _cholesky(L: np.ndarray, k: int) -> bool:
    """In place: the lower triangle of ``L[:k, :k]`` (a symmetric matrix) becomes its Cholesky factor.

    Returns False if the matrix is not positive definite.
    """
    for i in range(k):
        for j in range(i + 1):
            s = L[i, j]
            for p in range(j):
                s -= L[i, p] * L[j, p]
            if i == j:
                if s <= 0.0:
                    return False
                L[i, i] = np.sqrt(s)
            else:
                L[i, j] = s / L[j, j]
    return True


@njit(**_FAST)
def _gram_cholesky(W: np.ndarray, idx: np.ndarray, k: int, reg: float, L: np.ndarray) -> bool:
    """Cholesky of ``(W'W)[idx][:, idx] + reg I`` into ``L`` (only that k x k block of W'W is formed)."""
    n = W.shape[0]
    for i in range(k):
        for j in range(i + 1):
            s = reg if i == j else 0.0
            for p in range(n):
                s += W[p, idx[i]] * W[p, idx[j]]
            L[i, j] = s
    return _cholesky(L, k)


@njit(**_FAST)
def _chol_solve(L: np.ndarray, k: int, b: np.ndarray) -> None:
    """Solve ``L L' x = b`` in place for the leading ``k`` entries."""
    for i in range(k):
        s = b[i]
        for p in range(i):
            s -= L[i, p] * b[p]
        b[i] = s / L[i, i]
    for i in range(k - 1, -1, -1):
        s = b[i]
        for p in range(i + 1, k):
            s -= L[p, i] * b[p]
        b[i] = s / L[i, i]


@njit(**_FAST)
def _back_sub_t(Lq: np.ndarray, x: np.ndarray) -> None:
    """``x <- Lq'^-1 x`` in place."""
    n = Lq.shape[0]
    for i in range(n - 1, -1, -1):
        s = x[i]
        for p in range(i + 1, n):
            s -= Lq[p, i] * x[p]
        x[i] = s / Lq[i, i]


@njit(cache=True)
def _all_finite(a: np.ndarray) -> bool:
    for x in a.ravel():
        if not np.isfinite(x):
            return False
    return True


@njit(cache=True)
def check_inputs(Q, q, G, h, lb, ub) -> int:
    """0 if valid; ``k`` = 1..6 if the k-th argument has NaN/inf; 7 if some ``lb > ub``."""
    # Unrolled: numba cannot iterate over arrays of different dimensions.
    if not _all_finite(Q):
        return 1
    if not _all_finite(q):
        return 2
    if not _all_finite(G):
        return 3
    if not _all_finite(h):
        return 4
    if not _all_finite(lb):
        return 5
    if not _all_finite(ub):
        return 6
    if lb.shape[1] and ub.shape[1]:
        for b in range(lb.shape[0]):
            for i in range(lb.shape[1]):
                if lb[b, i] > ub[b, i]:
                    return 7
    return 0


@njit(**_FAST)
def _rows(G, h, lb, ub, rho, G_all, h_all, upper):
    """Stack ``[G; I; -I] u <= [h; ub; -lb]`` for one problem; multipliers' upper bounds rho (rows), inf (bounds)."""
    m, n = G.shape
    r = m
    G_all[:m] = G
    h_all[:m] = h
    upper[:m] = rho
    if ub.shape[0]:
        for i in range(n):
            G_all[r] = 0.0
            G_all[r, i] = 1.0
            h_all[r] = ub[i]
            upper[r] = np.inf
            r += 1
    if lb.shape[0]:
        for i in range(n):
            G_all[r] = 0.0
            G_all[r, i] = -1.0
            h_all[r] = -lb[i]
            upper[r] = np.inf
            r += 1


@njit(**_FAST)
def _setup(Q, q, G, Lq, W, v) -> bool:
    """``Q_sym = Lq Lq'``, ``W = Lq^-1 G'`` (n, m), ``v = Lq^-1 q``; False if Q is not positive definite."""
    n, m = Q.shape[0], G.shape[0]
    for i in range(n):
        for j in range(i + 1):
            Lq[i, j] = 0.5 * (Q[i, j] + Q[j, i])
    if not _cholesky(Lq, n):
        return False
    for r in range(m):
        for i in range(n):
            s = G[r, i]
            for p in range(i):
                s -= Lq[i, p] * W[p, r]
            W[i, r] = s / Lq[i, i]
    for i in range(n):
        s = q[i]
        for p in range(i):
            s -= Lq[i, p] * v[p]
        v[i] = s / Lq[i, i]
    return True


@njit(**_FAST)
def _solve_one(W, c, upper, tol, rel_reg, max_iter, lam):
    """Dual active set for one problem (see ``native._dual_solve``) with ``M = W'W`` never formed.

    ``lam`` is updated in place; returns (converged, iterations).
    """
    n, m = W.shape
    dmax = 0.0
    cmax = 0.0
    for i in range(m):
        col = 0.0
        for p in range(n):
            col += W[p, i] * W[p, i]
        dmax = max(dmax, col)
        cmax = max(cmax, abs(c[i]))
    thresh = tol * (1.0 + cmax + dmax)
    reg = rel_reg * (1.0 + dmax)
    grad = np.empty(m, dtype=c.dtype)
    wl = np.empty(n, dtype=c.dtype)
    idx = np.empty(m, dtype=np.int64)
    L = np.empty((m, m), dtype=c.dtype)
    d = np.empty(m, dtype=c.dtype)
    for it in range(1, max_iter + 1):
        for p in range(n):  # grad = c + W'(W λ)
            s = 0.0
            for j in range(m):
                s += W[p, j] * lam[j]
            wl[p] = s
        for i in range(m):
            s = c[i]
            for p in range(n):
                s += W[p, i] * wl[p]
            grad[i] = s
        interior_ok = True
        worst, jw = -np.inf, -1
        k = 0
        for i in range(m):
            if lam[i] <= 0.0:
                if -grad[i] > worst:
                    worst, jw = -grad[i], i
            elif lam[i] >= upper[i]:
                if grad[i] > worst:
                    worst, jw = grad[i], i
            else:
                idx[k] = i
                k += 1
                if abs(grad[i]) > thresh:
                    interior_ok = False
        if interior_ok and worst <= thresh:
            return True, it
        if interior_ok:
            idx[k] = jw
            k += 1
        if not _gram_cholesky(W, idx, k, reg, L):
            _gram_cholesky(W, idx, k, 1e3 * reg + 1e-30, L)
        for a in range(k):
            d[a] = -grad[idx[a]]
        _chol_solve(L, k, d)
        alpha = 1.0
        block = -1
        for a in range(k):
            i = idx[a]
            if d[a] < 0.0:
                t = lam[i] / (-d[a])
            elif d[a] > 0.0:
                t = (upper[i] - lam[i]) / d[a]
            else:
                continue
            if t < alpha:
                alpha, block = t, a
        for a in range(k):
            i = idx[a]
            lam[i] = min(max(lam[i] + alpha * d[a], 0.0), upper[i])
        if block >= 0:  # the blocking variable lands exactly on its bound
            i = idx[block]
            lam[i] = 0.0 if d[block] < 0.0 else upper[i]
    return False, max_iter


@njit(**_FAST)
def solve_batch(Q, q, G, h, lb, ub, rho, tol, rel_reg, max_iter, lam, keep=True):
    """Solve ``B`` problems (``lb``/``ub`` of shape ``(B, 0)`` when absent).

    ``lam (B, m')`` holds the warm start and receives the multipliers of all rows
    (constraints, then upper bounds, then lower bounds). Returns ``(u (B, n),
    slack (B, m), status (B,) int8, max iterations, Lq (B, n, n), W (B, n, m'))``;
    status 0 optimal, 1 infeasible, 2 max_iter, 3 Q not positive definite. ``Lq``
    and ``W`` (the factor of Q and ``Lq^-1 G'``) are what the backward pass reuses.
    """
    B, n = q.shape
    m = G.shape[1]
    mt = lam.shape[1]
    dtype = q.dtype
    u = np.zeros((B, n), dtype=dtype)
    slack = np.zeros((B, m), dtype=dtype)
    status = np.zeros(B, dtype=np.int8)
    most = 0
    kept = B if keep else 1  # the factors the backward pass reuses; a forward-only solve keeps one scratch
    Lq_all = np.zeros((kept, n, n), dtype=dtype)
    W_all = np.zeros((kept, n, mt), dtype=dtype)
    v = np.empty(n, dtype=dtype)
    G_all = np.empty((mt, n), dtype=dtype)
    h_all = np.empty(mt, dtype=dtype)
    upper = np.empty(mt, dtype=dtype)
    c = np.empty(mt, dtype=dtype)
    for b in range(B):
        Lq, W = Lq_all[b if keep else 0], W_all[b if keep else 0]
        _rows(G[b], h[b], lb[b], ub[b], rho, G_all, h_all, upper)
        if not _setup(Q[b], q[b], G_all, Lq, W, v):
            status[b] = NOT_POSITIVE_DEFINITE
            continue
        for i in range(mt):
            s = h_all[i]
            for p in range(n):
                s += W[p, i] * v[p]
            c[i] = s
        ok, iters = _solve_one(W, c, upper, tol, rel_reg, max_iter, lam[b])
        most = max(most, iters)
        x = v + W @ lam[b]  # u = -Q^-1 (q + G'λ) = -Lq'^-1 (v + W λ)
        _back_sub_t(Lq, x)
        hmax = 0.0
        for r in range(m):
            hmax = max(hmax, abs(h[b, r]))
        infeasible = False
        for r in range(m):
            s = -h[b, r]
            for p in range(n):
                s -= G[b, r, p] * x[p]
            slack[b, r] = max(s, 0.0)
            if s > 1e3 * tol * (1.0 + hmax):
                infeasible = True
        u[b] = -x
        # Bounds are hard rows, yet on badly scaled data (|h| or |q| >~ 1e5) the dual iteration can stop
        # with u outside them. u is clipped into the box; a miss beyond 1e-6 relative (1e-3 in float32)
        # is a failure.
        btol = max(1e-6, 100.0 * tol)
        out_of_box = False
        for p in range(lb.shape[1]):
            if u[b, p] < lb[b, p] - btol * (1.0 + abs(lb[b, p])):
                out_of_box = True
            u[b, p] = max(u[b, p], lb[b, p])
        for p in range(ub.shape[1]):
            if u[b, p] > ub[b, p] + btol * (1.0 + abs(ub[b, p])):
                out_of_box = True
            u[b, p] = min(u[b, p], ub[b, p])
        status[b] = MAX_ITER if (not ok or out_of_box) else (INFEASIBLE if infeasible else OPTIMAL)
    return u, slack, status, most, Lq_all, W_all


@njit(**_FAST)
def adjoint_batch(Lq_all, W_all, m, lam, g, rho, tol, rel_reg):
    """KKT adjoint on each problem's active set ``{tight < λ < upper - tight}`` (all rows).

    Solves ``Q w_u + G_A' w_λ = g, G_A w_u = 0`` with the forward pass's ``Lq`` and
    ``W = Lq^-1 G'``; ``m`` constraint rows come first (upper bound ``rho``), bound
    rows after (no upper bound). Returns ``(w_u (B, n), w_λ (B, m'))``.
    """
    B, n = g.shape
    mt = lam.shape[1]
    dtype = g.dtype
    w_u = np.empty((B, n), dtype=dtype)
    w_lam = np.zeros((B, mt), dtype=dtype)
    v = np.empty(n, dtype=dtype)
    idx = np.empty(mt, dtype=np.int64)
    L = np.empty((mt, mt), dtype=dtype)
    rhs = np.empty(mt, dtype=dtype)
    for b in range(B):
        Lq, W = Lq_all[b], W_all[b]
        for i in range(n):  # v = Lq^-1 g
            s = g[b, i]
            for p in range(i):
                s -= Lq[i, p] * v[p]
            v[i] = s / Lq[i, i]
        lmax = 0.0
        dmax = 0.0
        for i in range(mt):
            lmax = max(lmax, abs(lam[b, i]))
            col = 0.0
            for p in range(n):
                col += W[p, i] * W[p, i]
            dmax = max(dmax, col)
        tight = tol * 100.0 * (1.0 + lmax)
        k = 0
        for i in range(mt):
            if lam[b, i] > tight and (i >= m or lam[b, i] < rho - tight):
                idx[k] = i
                k += 1
        x = v.copy()
        if k > 0:
            reg = rel_reg * (1.0 + dmax)
            if not _gram_cholesky(W, idx, k, reg, L):
                _gram_cholesky(W, idx, k, 1e3 * reg + 1e-30, L)
            for a in range(k):  # (G Q^-1 g)_A = (W' v)_A
                s = 0.0
                for p in range(n):
                    s += W[p, idx[a]] * v[p]
                rhs[a] = s
            _chol_solve(L, k, rhs)
            for a in range(k):
                w_lam[b, idx[a]] = rhs[a]
                for p in range(n):
                    x[p] -= W[p, idx[a]] * rhs[a]
        _back_sub_t(Lq, x)  # w_u = Q^-1 (g - G_A' w_λ) = Lq'^-1 (Lq^-1 g - W_A w_λ)
        w_u[b] = x
    return w_u, w_lam


@njit(**_FAST)
def grads_batch(Lq_all, W_all, G, lb, ub, u, lam, g, rho, tol, rel_reg):
    """Gradients of ``<g, u*>`` for ``(Q, q, G, h, lb, ub)`` (OptNet, on the exact active set).

    From the adjoint ``(w_u, w_λ)`` of :func:`adjoint_batch`: ``dQ = -sym(w_u u')``,
    ``dq = -w_u``, ``dG = -(w_λ u' + λ w_u')``, ``dh = w_λ``, and for the bound rows
    ``d ub = w_λ`` (rows ``u <= ub``), ``d lb = -w_λ`` (rows ``-u <= -lb``).
    """
    B, n = g.shape
    m = G.shape[1]
    w_u, w_lam = adjoint_batch(Lq_all, W_all, m, lam, g, rho, tol, rel_reg)
    dQ = np.empty((B, n, n), dtype=g.dtype)
    dG = np.empty((B, m, n), dtype=g.dtype)
    d_ub = np.empty(ub.shape, dtype=g.dtype)
    d_lb = np.empty(lb.shape, dtype=g.dtype)
    start = m + ub.shape[1]
    for b in range(B):
        for i in range(n):
            for j in range(n):
                dQ[b, i, j] = -0.5 * (w_u[b, i] * u[b, j] + u[b, i] * w_u[b, j])
        for r in range(m):
            for j in range(n):
                dG[b, r, j] = -(w_lam[b, r] * u[b, j] + lam[b, r] * w_u[b, j])
        for i in range(ub.shape[1]):
            d_ub[b, i] = w_lam[b, m + i]
        for i in range(lb.shape[1]):
            d_lb[b, i] = -w_lam[b, start + i]
    return dQ, -w_u, dG, w_lam[:, :m].copy(), d_lb, d_ub


_NAMES = ("Q", "q", "G", "h", "lb", "ub")


def row_count(G: np.ndarray, h: np.ndarray, lb: np.ndarray, ub: np.ndarray) -> int:
    """Rows of the stacked problem (constraints, then upper bounds, then lower bounds): the multipliers' length."""
    return G.shape[1] + ub.shape[1] + lb.shape[1]


@njit(**_FAST)
def _forward(Q, q, G, h, lb, ub, rho, tol, rel_reg, max_iter, lam):
    """:func:`check_inputs` and a forward-only :func:`solve_batch` in one compiled call (the control loop's):
    ``(problem, u, slack, status, iterations)``; ``problem`` as :func:`check_inputs` (then nothing was solved)."""
    problem = check_inputs(Q, q, G, h, lb, ub)
    if problem:
        return problem, np.zeros_like(q), np.zeros_like(h), np.zeros(q.shape[0], dtype=np.int8), 0
    u, slack, status, most, _, _ = solve_batch(Q, q, G, h, lb, ub, rho, tol, rel_reg, max_iter, lam, False)
    return 0, u, slack, status, most


def _raise(problem: int, status: np.ndarray) -> None:
    """The named ``ValueError`` for a failed :func:`check_inputs` or a ``Q`` that is not positive definite."""
    if problem:
        raise ValueError(
            f"{_NAMES[problem - 1]} contains NaN or inf; expected finite values"
            if problem <= len(_NAMES)
            else "lb must not exceed ub (the input bounds are hard constraints)"
        )
    if (status == NOT_POSITIVE_DEFINITE).any():
        bad = np.flatnonzero(status == NOT_POSITIVE_DEFINITE).tolist()
        raise ValueError(f"Q must be positive definite; it is not for batch elements {bad[:10]}")


def solve_checked(Q, q, G, h, lb, ub, rho, tol, rel_reg, max_iter, lam):
    """:func:`solve_batch` after :func:`check_inputs`: a NaN/inf, ``lb > ub`` or a ``Q`` that is not positive
    definite raises ``ValueError`` naming the argument (and the batch elements)."""
    _raise(check_inputs(Q, q, G, h, lb, ub), np.zeros(0, np.int8))
    out = solve_batch(Q, q, G, h, lb, ub, rho, tol, rel_reg, max_iter, lam)
    _raise(0, out[2])
    return out


def forward_checked(Q, q, G, h, lb, ub, rho, tol, rel_reg, max_iter, lam):
    """The forward-only solve with :func:`solve_checked`'s errors, in one compiled call with no factors kept:
    ``(u, slack, status, iterations)``; ``lam`` receives the multipliers."""
    problem, u, slack, status, most = _forward(Q, q, G, h, lb, ub, rho, tol, rel_reg, max_iter, lam)
    if problem or status.any():  # the status scan only when some element is not optimal
        _raise(problem, status)
    return u, slack, status, most
