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

# Kernel-internal statuses, raised as a ValueError by solve_checked and forward_checked, never returned: Q not
# positive definite, a solution beyond float64's (float32's) range, and a solution the dual cannot resolve to
# its bounds' precision (|Q^-1 q| so far beyond them that u = -Q^-1 (q + G'λ) cancels below rounding).
NOT_POSITIVE_DEFINITE, OVERFLOW, ILL_SCALED = 3, 4, 5
# The problems _forward reports besides check_inputs' codes (1-7): shapes that do not fit together (the caller
# names the argument), and a batch element with one of the statuses above (its ValueError names the elements).
SHAPES, SOLVE_FAILED = 8, 9

# Reassociation and fused multiply-add only: never the no-NaN/no-inf assumptions, since
# the bound rows use inf as the multipliers' upper bound and the input check tests finiteness.
_FAST = {"fastmath": {"reassoc", "contract", "arcp", "nsz"}, "error_model": "numpy", "cache": True}


@njit(**_FAST)
def _cholesky(L: np.ndarray, k: int, inv: np.ndarray) -> bool:
    """In place: the lower triangle of ``L[:k, :k]`` (a symmetric matrix) becomes its Cholesky factor,
    ``inv[:k]`` the reciprocals of its diagonal (divisions are the slow part of these tiny solves).

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
                inv[i] = 1.0 / L[i, i]
            else:
                L[i, j] = s * inv[j]
    return True


@njit(**_FAST)
def _col_dot(W: np.ndarray, i: int, j: int) -> float:
    """``W[:, i] . W[:, j]``."""
    s = 0.0
    for p in range(W.shape[0]):
        s += W[p, i] * W[p, j]
    return s


@njit(**_FAST)
def _gram_cholesky(W: np.ndarray, idx: np.ndarray, k: int, reg: float, L: np.ndarray, inv: np.ndarray) -> bool:
    """Cholesky of ``(W'W)[idx][:, idx] + reg I`` into ``L`` (only that k x k block of W'W is formed)."""
    for i in range(k):
        for j in range(i + 1):
            L[i, j] = _col_dot(W, idx[i], idx[j]) + (reg if i == j else 0.0)
    return _cholesky(L, k, inv)


@njit(**_FAST)
def _append(W: np.ndarray, idx: np.ndarray, k: int, reg: float, L: np.ndarray, inv: np.ndarray) -> bool:
    """Grow the factor of the Gram block of ``idx[:k]`` to ``idx[:k + 1]``: one new last row, O(kn + k^2).

    False if the grown matrix is not positive definite (the factor is then to be rebuilt)."""
    j = idx[k]
    s = _col_dot(W, j, j) + reg
    for a in range(k):
        r = _col_dot(W, idx[a], j)
        for p in range(a):
            r -= L[k, p] * L[a, p]
        r *= inv[a]
        L[k, a] = r
        s -= r * r
    if s <= 0.0:
        return False
    L[k, k] = np.sqrt(s)
    inv[k] = 1.0 / L[k, k]
    return True


@njit(**_FAST)
def _remove(idx: np.ndarray, k: int, a: int, L: np.ndarray, inv: np.ndarray, x: np.ndarray) -> None:
    """Drop entry ``a`` of ``idx[:k]`` and its row and column from the factor ``L``: O(k^2).

    With ``L = [[L11, 0, 0], [l', d, 0], [L31, x, T]]`` (row ``a`` in the middle), the
    Gram block without ``a`` factors as ``[[L11, 0], [L31, T~]]``, ``T~ T~' = T T' + x x'``:
    a rank-one update by rotations. ``x`` is scratch of length >= k.
    """
    t = k - 1 - a
    b = a + 1  # the trailing block T starts at row and column b
    for i in range(t):
        x[i] = L[b + i, a]
    for j in range(t):
        diag = L[b + j, b + j]
        r = np.sqrt(diag * diag + x[j] * x[j])
        c, s = r * inv[b + j], x[j] * inv[b + j]
        ci = 1.0 / c
        L[b + j, b + j] = r
        inv[b + j] = 1.0 / r
        for i in range(j + 1, t):
            L[b + i, b + j] = (L[b + i, b + j] + s * x[i]) * ci
            x[i] = c * x[i] - s * L[b + i, b + j]
    for i in range(t):  # rows up, T~ one column left; row b + i is read before row a + i + 1 is written
        idx[a + i] = idx[b + i]
        inv[a + i] = inv[b + i]
        for p in range(a):
            L[a + i, p] = L[b + i, p]
        for j in range(i + 1):
            L[a + i, a + j] = L[b + i, b + j]


@njit(**_FAST)
def _chol_solve(L: np.ndarray, inv: np.ndarray, k: int, b: np.ndarray) -> None:
    """Solve ``L L' x = b`` in place for the leading ``k`` entries."""
    for i in range(k):
        s = b[i]
        for p in range(i):
            s -= L[i, p] * b[p]
        b[i] = s * inv[i]
    for i in range(k - 1, -1, -1):
        s = b[i]
        for p in range(i + 1, k):
            s -= L[p, i] * b[p]
        b[i] = s * inv[i]


@njit(**_FAST)
def _back_sub_t(Lq: np.ndarray, inv: np.ndarray, x: np.ndarray) -> None:
    """``x <- Lq'^-1 x`` in place."""
    n = Lq.shape[0]
    for i in range(n - 1, -1, -1):
        s = x[i]
        for p in range(i + 1, n):
            s -= Lq[p, i] * x[p]
        x[i] = s * inv[i]


@njit(**_FAST)
def _forward_sub(Lq: np.ndarray, inv: np.ndarray, b: np.ndarray, x: np.ndarray) -> None:
    """``x <- Lq^-1 b``."""
    for i in range(Lq.shape[0]):
        s = b[i]
        for p in range(i):
            s -= Lq[i, p] * x[p]
        x[i] = s * inv[i]


@njit(**_FAST)
def _all_finite(a: np.ndarray) -> bool:
    s = 0.0
    for x in a.flat:  # x * 0 is NaN exactly for NaN and inf; no branch in the loop
        s += x * 0.0
    return s == 0.0


@njit(**_FAST)
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
def _setup(Q, q, G, h, lb, ub, rho, Lq, inv, W, v, c, upper) -> bool:
    """One problem's dual data for the stacked rows ``G_all u <= h_all``, ``G_all = [G; I; -I]``.

    ``Q_sym = Lq Lq'`` (``inv`` its diagonal's reciprocals); ``W = Lq^-1 G_all' (n, m')``;
    ``v = Lq^-1 q``; ``c = h_all + W'v``; ``upper`` the multipliers' bounds, rho (rows)
    or inf (bounds). False if Q is not positive definite. The forward substitution runs
    row by row of ``W``, each a vector operation over all ``m'`` columns.
    """
    n, m = Q.shape[0], G.shape[0]
    mt = W.shape[1]
    for i in range(n):
        for j in range(i + 1):
            Lq[i, j] = 0.5 * (Q[i, j] + Q[j, i])
    if not _cholesky(Lq, n, inv):
        return False
    _forward_sub(Lq, inv, q, v)
    nu = ub.shape[0]
    for i in range(n):
        w = W[i]
        for r in range(m):
            w[r] = G[r, i]
        for r in range(m, mt):
            w[r] = 0.0
        if nu:
            w[m + i] = 1.0
        if lb.shape[0]:
            w[m + nu + i] = -1.0
        for p in range(i):
            lip = Lq[i, p]
            wp = W[p]
            for r in range(mt):
                w[r] -= lip * wp[r]
        for r in range(mt):
            w[r] *= inv[i]
    for r in range(m):
        c[r] = h[r]
        upper[r] = rho
    for e in range(nu):
        c[m + e] = ub[e]
        upper[m + e] = np.inf
    for e in range(lb.shape[0]):
        c[m + nu + e] = -lb[e]
        upper[m + nu + e] = np.inf
    for p in range(n):
        vp = v[p]
        wp = W[p]
        for r in range(mt):
            c[r] += wp[r] * vp
    return True


@njit(**_FAST)
def _solve_one(W, c, upper, tol, rel_reg, max_iter, lam, work, L, inv, idx):
    """Dual active set for one problem (see ``native._dual_solve``) with ``M = W'W`` never formed.

    The free set ``idx[:k]`` and the Cholesky factor ``L`` of its regularised Gram block
    persist across iterations: a released multiplier appends a row, one that lands on a
    bound leaves by a rank-one update. ``lam`` is updated in place; ``work`` is scratch
    of length ``2 m' + n``. Returns (converged, iterations).
    """
    n, m = W.shape
    grad, d, wl = work[:m], work[m : 2 * m], work[2 * m : 2 * m + n]
    dmax = 0.0
    cmax = 0.0
    for i in range(m):
        dmax = max(dmax, _col_dot(W, i, i))
        cmax = max(cmax, abs(c[i]))
    thresh = tol * (1.0 + cmax + dmax)
    reg = rel_reg * (1.0 + dmax)
    k = 0
    for i in range(m):  # a warm start's interior multipliers are the first free set
        if 0.0 < lam[i] < upper[i]:
            idx[k] = i
            k += 1
    factored = _gram_cholesky(W, idx, k, reg, L, inv)
    for it in range(1, max_iter + 1):
        for _ in range(8):  # rounding made a pivot non-positive: more regularisation, kept from here on
            if factored:
                break
            reg = 1e3 * reg + 1e-30
            factored = _gram_cholesky(W, idx, k, reg, L, inv)
        if not factored:
            return False, it
        for p in range(n):  # grad = c + W'(W λ)
            s = 0.0
            for j in range(m):
                s += W[p, j] * lam[j]
            wl[p] = s
        for i in range(m):
            grad[i] = c[i]
        for p in range(n):
            wp, s = W[p], wl[p]
            for i in range(m):
                grad[i] += wp[i] * s
        interior_ok = True
        for a in range(k):
            if abs(grad[idx[a]]) > thresh:
                interior_ok = False
        worst, jw = -np.inf, -1
        for i in range(m):
            if lam[i] <= 0.0:
                if -grad[i] > worst:
                    worst, jw = -grad[i], i
            elif lam[i] >= upper[i]:
                if grad[i] > worst:
                    worst, jw = grad[i], i
        if interior_ok and worst <= thresh:
            return True, it
        if interior_ok:  # release the bound multiplier that most wants to leave
            idx[k] = jw
            factored = _append(W, idx, k, reg, L, inv)
            k += 1
            if not factored:
                continue
        for a in range(k):
            d[a] = -grad[idx[a]]
        _chol_solve(L, inv, k, d)
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
        for a in range(k - 1, -1, -1):  # whatever is on a bound leaves the free set
            i = idx[a]
            if lam[i] <= 0.0 or lam[i] >= upper[i]:
                _remove(idx, k, a, L, inv, d)
                k -= 1
    return False, max_iter


@njit(**_FAST)
def _primal(n, v, W, lam, Lq, inv_q, x) -> bool:
    """``x = Lq'^-1 (v + W λ)``, the negated primal ``u = -Q^-1 (q + G_all'λ)``; False if it is not finite."""
    mt = W.shape[1]
    for p in range(n):
        s = v[p]
        for j in range(mt):
            s += W[p, j] * lam[j]
        x[p] = s
    _back_sub_t(Lq, inv_q, x)
    return np.isfinite(x).all()


@njit(**_FAST)
def _in_box(x, lb, ub, tol) -> bool:
    """Whether ``u = -x`` meets its hard bounds to 1e-6 relative (1e-3 in float32: 100 ``tol``)."""
    btol = max(1e-6, 100.0 * tol)
    for p in range(x.shape[0]):
        if lb.shape[0] and -x[p] < lb[p] - btol * (1.0 + abs(lb[p])):
            return False
        if ub.shape[0] and -x[p] > ub[p] + btol * (1.0 + abs(ub[p])):
            return False
    return True


@njit(**_FAST)
def _resolvable(free, x, lb, ub, tol) -> bool:
    """Whether ``u = -x`` is resolved to the box tolerance: ``u = -(Q^-1 q + Q^-1 G_all'λ)`` cancels the
    unconstrained solution ``free = Q^-1 q`` against the multipliers' term, so each component carries a rounding
    error of ~eps ``|free_p|``, which must stay below the tolerance on ``1 + |u_p|`` plus its bounds' scale."""
    btol = max(1e-6, 100.0 * tol)
    eps = np.finfo(x.dtype).eps
    for p in range(x.shape[0]):
        scale = 1.0 + abs(x[p])
        if lb.shape[0]:
            scale = max(scale, 1.0 + abs(lb[p]))
        if ub.shape[0]:
            scale = max(scale, 1.0 + abs(ub[p]))
        if 2.0 * eps * abs(free[p]) > btol * scale:
            return False
    return True


@njit(**_FAST)
def solve_batch(Q, q, G, h, lb, ub, rho, tol, rel_reg, max_iter, lam, keep=True):
    """Solve ``B`` problems (``lb``/``ub`` of shape ``(B, 0)`` when absent).

    ``lam (B, m')`` holds the warm start and receives the multipliers of all rows
    (constraints, then upper bounds, then lower bounds). Returns ``(u (B, n),
    slack (B, m), status (B,) int8, max iterations, Lq (B, n, n), W (B, n, m'))``;
    status 0 optimal, 1 infeasible, 2 max_iter, 3 Q not positive definite, 4 overflow, 5 ill-scaled. ``Lq``
    and ``W`` (the factor of Q and ``Lq^-1 G_all'``) are what the backward pass reuses.
    """
    B, n = q.shape
    m = G.shape[1]
    mt = lam.shape[1]
    dtype = q.dtype
    u = np.empty((B, n), dtype=dtype)
    slack = np.empty((B, m), dtype=dtype)
    status = np.zeros(B, dtype=np.int8)
    most = 0
    kept = B if keep else 1  # the factors the backward pass reuses; a forward-only solve keeps one scratch
    Lq_all = np.zeros((kept, n, n), dtype=dtype)
    W_all = np.empty((kept, n, mt), dtype=dtype)
    work = np.empty(4 * mt + 4 * n, dtype=dtype)
    v, x, inv_q = work[:n], work[n : 2 * n], work[2 * n : 3 * n]
    c, upper = work[3 * n : 3 * n + mt], work[3 * n + mt : 3 * n + 2 * mt]
    scratch = work[3 * n + 2 * mt :]
    L = np.empty((mt, mt), dtype=dtype)
    inv = np.empty(mt, dtype=dtype)
    idx = np.empty(mt, dtype=np.int64)
    free = np.empty(n, dtype=dtype)
    for b in range(B):
        Lq, W = Lq_all[b if keep else 0], W_all[b if keep else 0]
        if not _setup(Q[b], q[b], G[b], h[b], lb[b], ub[b], rho, Lq, inv_q, W, v, c, upper):
            status[b] = NOT_POSITIVE_DEFINITE
            u[b] = 0.0
            slack[b] = 0.0
            continue
        ok, iters = _solve_one(W, c, upper, tol, rel_reg, max_iter, lam[b], scratch, L, inv, idx)
        most = max(most, iters)
        # The dual's threshold scales with |c| ~ |Q^-1 q|, so where that dwarfs the bounds a converged λ can still
        # leave u outside them (the Newton steps' regularisation biases λ by ~rel_reg |λ|). Refine from the same
        # λ at tighter tolerances; problems already inside their box are never touched.
        finite = _primal(n, v, W, lam[b], Lq, inv_q, x)
        refine_tol = tol
        for _ in range(3):
            if not finite or not ok or _in_box(x, lb[b], ub[b], tol):
                break
            refine_tol *= 1e-3
            ok, iters = _solve_one(W, c, upper, refine_tol, rel_reg, max_iter, lam[b], scratch, L, inv, idx)
            most = max(most, iters)
            finite = _primal(n, v, W, lam[b], Lq, inv_q, x)
        if not finite:  # |q| or |h| too large for Q's scale: Q^-1 q overflowed
            status[b] = OVERFLOW
            u[b] = 0.0
            slack[b] = 0.0
            continue
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
        for p in range(n):
            free[p] = v[p]
        _back_sub_t(Lq, inv_q, free)
        inside = _in_box(x, lb[b], ub[b], tol) and _resolvable(free, x, lb[b], ub[b], tol)
        for p in range(n):  # u = -x, clipped into the box (a miss beyond the box tolerance is a failure)
            up = -x[p]
            if lb.shape[1]:
                up = max(up, lb[b, p])
            if ub.shape[1]:
                up = min(up, ub[b, p])
            u[b, p] = up
        if not ok:
            status[b] = MAX_ITER
        elif not inside:
            status[b] = ILL_SCALED
        else:
            status[b] = INFEASIBLE if infeasible else OPTIMAL
    return u, slack, status, most, Lq_all, W_all


@njit(**_FAST)
def adjoint_batch(Lq_all, W_all, m, lam, g, rho, tol, rel_reg):
    """KKT adjoint on each problem's active set ``{tight < λ < upper - tight}`` (all rows).

    Solves ``Q w_u + G_A' w_λ = g, G_A w_u = 0`` with the forward pass's ``Lq`` and
    ``W = Lq^-1 G_all'``; ``m`` constraint rows come first (upper bound ``rho``), bound
    rows after (no upper bound). Returns ``(w_u (B, n), w_λ (B, m'))``.
    """
    B, n = g.shape
    mt = lam.shape[1]
    dtype = g.dtype
    w_u = np.empty((B, n), dtype=dtype)
    w_lam = np.zeros((B, mt), dtype=dtype)
    v = np.empty(n, dtype=dtype)
    inv_q = np.empty(n, dtype=dtype)
    idx = np.empty(mt, dtype=np.int64)
    L = np.empty((mt, mt), dtype=dtype)
    inv = np.empty(mt, dtype=dtype)
    rhs = np.empty(mt, dtype=dtype)
    for b in range(B):
        Lq, W = Lq_all[b], W_all[b]
        for i in range(n):
            inv_q[i] = 1.0 / Lq[i, i]
        _forward_sub(Lq, inv_q, g[b], v)  # v = Lq^-1 g
        lmax = 0.0
        dmax = 0.0
        for i in range(mt):
            lmax = max(lmax, abs(lam[b, i]))
            dmax = max(dmax, _col_dot(W, i, i))
        tight = tol * 100.0 * (1.0 + lmax)
        k = 0
        for i in range(mt):
            if lam[b, i] > tight and (i >= m or lam[b, i] < rho - tight):
                idx[k] = i
                k += 1
        x = v.copy()
        if k > 0:
            reg = rel_reg * (1.0 + dmax)
            if not _gram_cholesky(W, idx, k, reg, L, inv):
                _gram_cholesky(W, idx, k, 1e3 * reg + 1e-30, L, inv)
            for a in range(k):  # (G Q^-1 g)_A = (W' v)_A
                s = 0.0
                for p in range(n):
                    s += W[p, idx[a]] * v[p]
                rhs[a] = s
            _chol_solve(L, inv, k, rhs)
            for a in range(k):
                w_lam[b, idx[a]] = rhs[a]
                for p in range(n):
                    x[p] -= W[p, idx[a]] * rhs[a]
        _back_sub_t(Lq, inv_q, x)  # w_u = Q^-1 (g - G_A' w_λ) = Lq'^-1 (Lq^-1 g - W_A w_λ)
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
def _forward(Q, q, G, h, lb, ub, rho, tol, rel_reg, max_iter, lam0):
    """The control loop's one compiled call: shapes, :func:`check_inputs` and a forward-only
    :func:`solve_batch` warm-started from ``lam0 (B, m')`` (``(0, 0)``: from zero). Returns ``(problem, u,
    slack, status, lam, iterations)``; ``problem`` 0, a :func:`check_inputs` code (nothing solved), ``SHAPES``
    (nothing solved) or ``SOLVE_FAILED`` (some element's status is kernel-internal: see :func:`raise_failed`)."""
    B, n = q.shape
    m = G.shape[1]
    shapes_ok = (
        Q.shape[0] == B and Q.shape[1] == n and Q.shape[2] == n and G.shape[0] == B and G.shape[2] == n
        and h.shape[0] == B and h.shape[1] == m and lb.shape[0] == B and ub.shape[0] == B
        and (lb.shape[1] == 0 or lb.shape[1] == n) and (ub.shape[1] == 0 or ub.shape[1] == n)
    )  # fmt: skip
    mt = m + lb.shape[1] + ub.shape[1]
    shapes_ok = shapes_ok and (lam0.shape[0] == 0 or (lam0.shape[0] == B and lam0.shape[1] == mt))
    lam = np.zeros((B, mt), dtype=q.dtype) if lam0.shape[0] == 0 else lam0
    problem = check_inputs(Q, q, G, h, lb, ub) if shapes_ok else SHAPES
    if problem:
        return problem, np.zeros_like(q), np.zeros((B, m), dtype=q.dtype), np.zeros(B, dtype=np.int8), lam, 0
    u, slack, status, most, _, _ = solve_batch(Q, q, G, h, lb, ub, rho, tol, rel_reg, max_iter, lam, False)
    for b in range(B):
        if status[b] == NOT_POSITIVE_DEFINITE or status[b] == OVERFLOW or status[b] == ILL_SCALED:
            problem = SOLVE_FAILED
    return problem, u, slack, status, lam, most


def raise_failed(status: np.ndarray, problem: int = 0) -> None:
    """The named ``ValueError`` for a failed :func:`check_inputs` (``problem``) or a batch element whose
    ``status (B,)`` is kernel-internal (``NOT_POSITIVE_DEFINITE``, ``OVERFLOW``, ``ILL_SCALED``)."""
    if problem and problem != SOLVE_FAILED:
        raise ValueError(
            f"{_NAMES[problem - 1]} contains NaN or inf; expected finite values"
            if problem <= len(_NAMES)
            else "lb must not exceed ub (the input bounds are hard constraints)"
        )
    if (status == NOT_POSITIVE_DEFINITE).any():
        bad = np.flatnonzero(status == NOT_POSITIVE_DEFINITE).tolist()
        raise ValueError(f"Q must be positive definite; it is not for batch elements {bad[:10]}")
    if (status == OVERFLOW).any():
        bad = np.flatnonzero(status == OVERFLOW).tolist()
        raise ValueError(
            f"q and h are too large for Q's scale: the solution overflows for batch elements {bad[:10]}; "
            "rescale the problem (divide Q, q by one number, or G, h by one number per row)"
        )
    if (status == ILL_SCALED).any():
        bad = np.flatnonzero(status == ILL_SCALED).tolist()
        raise ValueError(
            f"q is ill-scaled for batch elements {bad[:10]}: |Q^-1 q| exceeds the scale of u and its bounds by more "
            "than ~2e9 (~4e3 in float32), so u cannot be resolved to the bounds' precision; expected a reference "
            "within that range of the bounds (clip it, or rescale Q and q)"
        )


def solve_checked(Q, q, G, h, lb, ub, rho, tol, rel_reg, max_iter, lam):
    """:func:`solve_batch` after :func:`check_inputs`: a NaN/inf, ``lb > ub`` or a ``Q`` that is not positive
    definite raises ``ValueError`` naming the argument (and the batch elements)."""
    raise_failed(np.zeros(0, np.int8), check_inputs(Q, q, G, h, lb, ub))
    out = solve_batch(Q, q, G, h, lb, ub, rho, tol, rel_reg, max_iter, lam)
    raise_failed(out[2])
    return out


def forward_checked(Q, q, G, h, lb, ub, rho, tol, rel_reg, max_iter, lam0):
    """The forward-only solve with :func:`solve_checked`'s errors, in one compiled call with no factors kept:
    ``(u, slack, status, lam, iterations)`` (``lam`` the multipliers of all rows: ``lam0`` itself, updated,
    unless that is ``(0, 0)``), or None if the shapes do not fit together (the caller names the argument)."""
    problem, u, slack, status, lam, most = _forward(Q, q, G, h, lb, ub, rho, tol, rel_reg, max_iter, lam0)
    if problem:
        if problem == SHAPES:
            return None
        raise_failed(status, problem)
    return u, slack, status, lam, most
