"""The native batched QP solver: a dual active-set method with exact active-set gradients.

Problem, per batch element (``Q`` positive definite)::

    min_u  1/2 u'Qu + q'u + rho * sum(s)
    s.t.   G u - s <= h,  s >= 0         (the constraint rows, elastic)
           lb <= u <= ub                  (input bounds, hard)

Without the slack s this is the QP the caller wrote; with it the problem is
always feasible, and because the penalty is exact (linear), ``s = 0`` whenever
the hard problem is feasible and its multipliers are below ``rho``.

Its dual is a box-constrained QP in the multipliers λ of all rows (constraints,
then upper bounds, then lower bounds)::

    min_λ  1/2 λ'Mλ + c'λ,   M = G Q^-1 G',  c = h + G Q^-1 q,
    s.t.   0 <= λ_i <= rho  (constraint rows),   0 <= λ_i  (bound rows)

and the primal solution is ``u = -Q^-1 (q + G'λ)``. The box is what makes the
elastic form free: the penalty is just an upper bound on λ. The dual is solved
by a primal-feasible active-set method on the box (see ``_dual_solve``): Newton
steps on the free multipliers (regularised, since M is singular whenever there
are more rows than variables), cut at the first bound, releasing one bound at a
time. On CPU a numba-compiled kernel runs it one problem at a time
(:mod:`safeliquid.qp._kernel`); the batched-torch version here serves other
devices, every batch element iterating in lockstep. Tests hold the two equal.

Gradients (OptNet, Amos & Kolter 2017) come from the KKT system on the exact
active set ``A = {0 < λ < rho}``; rows at ``λ = rho`` (elastic, violated)
contribute their fixed multiplier. No smoothing: the gradient is the derivative
of the solution map wherever it is differentiable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from safeliquid.qp import _kernel
from safeliquid.qp.settings import INFEASIBLE, MAX_ITER, OPTIMAL, STATUS_NAMES, QPSettings


@dataclass
class QPSolution:
    """The solution of a batch of QPs.

    ``u (B, n)`` the primal solution. ``lam (B, m)`` the multipliers of the
    constraint rows (native backend only; ``None`` from the reference backends).
    ``slack (B, m)`` how much each row is violated (``G u - h`` where positive,
    else 0). ``status (B,)`` int: ``OPTIMAL`` (0); ``INFEASIBLE`` (1: the hard
    problem has no solution, or needs multipliers above the penalty, and ``u``
    minimises the penalised violation); ``MAX_ITER`` (2: the iteration limit was
    reached and ``u`` is the last iterate, finite). ``iterations`` run.
    """

    u: Tensor
    lam: Tensor | None
    slack: Tensor
    status: Tensor
    iterations: int

    def status_names(self) -> list[str]:
        return [STATUS_NAMES[int(s)] for s in self.status]


def _masked_solve(M: Tensor, rhs: Tensor, free: Tensor, reg: Tensor) -> Tensor:
    """Solve ``(M_FF + reg I) x_F = rhs_F`` with ``x = 0`` off the free set F; shapes ``(B, m, m)``, ``(B, m)``."""
    f = free.to(M.dtype)
    eye = torch.eye(M.shape[-1], dtype=M.dtype, device=M.device)
    K = M * (f.unsqueeze(-1) * f.unsqueeze(-2)) + eye * (reg.unsqueeze(-1) * f + (1.0 - f)).unsqueeze(-1)
    L, info = torch.linalg.cholesky_ex(K)
    if bool((info != 0).any()):  # rounding made a tiny pivot negative: more regularisation there
        bad = (info != 0).to(M.dtype).view(-1, 1, 1)
        L, _ = torch.linalg.cholesky_ex(K + bad * eye * (1e3 * reg.view(-1, 1, 1) + 1e-30))
    return torch.cholesky_solve((rhs * f).unsqueeze(-1), L).squeeze(-1) * f


def _dual_solve(
    M: Tensor, c: Tensor, upper: Tensor, tol: float, reg: Tensor, max_iter: int, lam0: Tensor | None
) -> tuple[Tensor, Tensor, int]:
    """Active-set method for ``min 1/2 λ'Mλ + c'λ, 0 <= λ <= upper``; returns ``(λ, converged (B,), iterations)``.

    The classic primal-feasible scheme on the box, vectorised over the batch. While
    the interior variables are not optimal, take the (regularised) Newton step on
    them, cut at the first bound it meets (which then joins the bound set).
    Otherwise release the one bound variable whose gradient most wants to leave its
    bound: its Newton component points away from the bound, because
    ``(M_FF + δI)^-1`` has a positive diagonal, so every step makes progress even
    when M is singular (more rows than variables).
    """
    batch = c.shape[0]
    rows = torch.arange(batch, device=c.device)
    lam = torch.zeros_like(c) if lam0 is None else torch.minimum(lam0.clamp_min(0.0), upper)
    scale = 1.0 + c.abs().amax(-1) + M.diagonal(dim1=-2, dim2=-1).abs().amax(-1)
    thresh = (tol * scale).unsqueeze(-1)
    done = torch.zeros(batch, dtype=torch.bool, device=c.device)
    it = 0
    for it in range(1, max_iter + 1):  # noqa: B007 - `it` is returned
        grad = torch.baddbmm(c.unsqueeze(-1), M, lam.unsqueeze(-1)).squeeze(-1)
        at_lower, at_upper = lam <= 0, lam >= upper
        interior = ~(at_lower | at_upper)
        # How much each bound variable wants to leave its bound (> 0: it does).
        leave = torch.where(at_lower, -grad, torch.where(at_upper, grad, torch.zeros_like(grad)))
        interior_ok = ((grad.abs() <= thresh) | ~interior).all(-1)
        worst, j = leave.max(-1)
        done = interior_ok & (worst <= thresh.squeeze(-1))
        if bool(done.all()):
            break
        release = interior_ok & ~done
        free = interior.clone()
        free[rows, j] |= release
        d = -_masked_solve(M, grad, free, reg)
        inf = torch.full_like(d, float("inf"))
        to_lower = torch.where(free & (d < 0), lam / (-d), inf)
        to_upper = torch.where(free & (d > 0), (upper - lam) / d, inf)
        alpha = torch.minimum(to_lower, to_upper).amin(-1).clamp(max=1.0)
        new = torch.minimum((lam + alpha.unsqueeze(-1) * d).clamp_min(0.0), upper)
        # The variable that blocked the step lands exactly on its bound.
        hit_lower = free & (to_lower <= alpha.unsqueeze(-1)) & (alpha < 1).unsqueeze(-1)
        hit_upper = free & (to_upper <= alpha.unsqueeze(-1)) & (alpha < 1).unsqueeze(-1)
        new = torch.where(hit_lower, torch.zeros_like(new), torch.where(hit_upper, upper, new))
        lam = torch.where(done.unsqueeze(-1), lam, new)
    return lam, done, it


def _bound_scale(h_all: Tensor, upper: Tensor) -> Tensor:
    """``1 + |bound|`` on the bound rows (``upper`` inf), 0 on the constraint rows: ``(B, m')``."""
    return torch.where(torch.isinf(upper), 1.0 + h_all.abs(), torch.zeros_like(h_all))


def _bounds_met(G_all: Tensor, h_all: Tensor, upper: Tensor, u: Tensor, tol: float) -> Tensor:
    """``(B,)``: whether ``u (B, n)`` meets the bound rows to the kernel's box tolerance (1e-6 relative)."""
    btol = max(1e-6, 100.0 * tol)
    excess = (G_all @ u.unsqueeze(-1)).squeeze(-1) - h_all
    return ((excess <= btol * _bound_scale(h_all, upper)) | ~torch.isinf(upper)).all(-1)


def _resolvable(free: Tensor, u: Tensor, G_all: Tensor, h_all: Tensor, upper: Tensor, tol: float) -> Tensor:
    """``(B,)``: the kernel's ``_resolvable``: each ``u_p`` carries a rounding error of ~eps ``|(Q^-1 q)_p|``,
    which must stay below the box tolerance on ``1 + |u_p|`` or its bounds' scale."""
    btol = max(1e-6, 100.0 * tol)
    # A bound row is ±e_p: its |column| picks the component it bounds.
    per_component = (G_all.abs() * _bound_scale(h_all, upper).unsqueeze(-1)).amax(-2)  # (B, n)
    scale = torch.maximum(1.0 + u.abs(), per_component)
    return (2.0 * torch.finfo(u.dtype).eps * free.abs() <= btol * scale).all(-1)


def stack_bounds(G: Tensor, h: Tensor, lb: Tensor | None, ub: Tensor | None) -> tuple[Tensor, Tensor]:
    """Bounds as rows after the constraints: ``[G; I; -I] u <= [h; ub; -lb]``, shapes ``(B, m', n)``, ``(B, m')``."""
    batch, _, n = G.shape
    eye = torch.eye(n, dtype=G.dtype, device=G.device).expand(batch, n, n)
    rows, rhs = [G], [h]
    if ub is not None:
        rows.append(eye)
        rhs.append(ub)
    if lb is not None:
        rows.append(-eye)
        rhs.append(-lb)
    return torch.cat(rows, 1), torch.cat(rhs, 1)


def _assemble(G: Tensor, h: Tensor, lb: Tensor | None, ub: Tensor | None, rho: float) -> tuple[Tensor, Tensor, Tensor]:
    """Stacked rows and the multipliers' upper bounds: ``rho`` on constraint rows, ``inf`` on bound rows."""
    G_all, h_all = stack_bounds(G, h, lb, ub)
    inf = torch.full((G.shape[0], G_all.shape[1] - G.shape[1]), float("inf"), dtype=G.dtype, device=G.device)
    return G_all, h_all, torch.cat([torch.full_like(h, rho), inf], dim=1)


class _NativeQP(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        Q: Tensor,
        q: Tensor,
        G_all: Tensor,
        h_all: Tensor,
        upper: Tensor,
        max_iter: int,
        lam0: Tensor | None,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        tol, rel_reg = QPSettings.tolerances(Q.dtype)
        L = torch.linalg.cholesky(Q)
        Qi_Gt = torch.cholesky_solve(G_all.transpose(1, 2), L)  # (B, n, m')
        Qi_q = torch.cholesky_solve(q.unsqueeze(-1), L).squeeze(-1)  # (B, n)
        M = G_all @ Qi_Gt
        c = h_all + (G_all @ Qi_q.unsqueeze(-1)).squeeze(-1)
        reg = rel_reg * (1.0 + M.diagonal(dim1=-2, dim2=-1).amax(-1))
        lam, converged, iterations = _dual_solve(M, c, upper, tol, reg, max_iter, lam0)
        u = -(Qi_q + (Qi_Gt @ lam.unsqueeze(-1)).squeeze(-1))
        refine_tol = tol
        for _ in range(3):  # the kernel's refinement: where a converged λ leaves u outside its bounds
            miss = converged & ~_bounds_met(G_all, h_all, upper, u, tol)
            if not bool(miss.any()):
                break
            refine_tol *= 1e-3
            lam_r, converged_r, more = _dual_solve(M, c, upper, refine_tol, reg, max_iter, lam)
            lam = torch.where(miss.unsqueeze(-1), lam_r, lam)
            converged = torch.where(miss, converged_r, converged)
            iterations += more
            u = -(Qi_q + (Qi_Gt @ lam.unsqueeze(-1)).squeeze(-1))
        resolved = _resolvable(Qi_q, u, G_all, h_all, upper, tol)
        ctx.save_for_backward(u, lam, L, Qi_Gt, M, upper, reg)
        ctx.tol = tol
        ctx.iterations = iterations
        return u, lam, converged, resolved, torch.tensor(iterations)

    @staticmethod
    def backward(ctx: Any, g_u: Tensor, g_lam: Tensor | None, *_: Any) -> tuple[Tensor | None, ...]:
        u, lam, L, Qi_Gt, M, upper, reg = ctx.saved_tensors
        scale = 1.0 + lam.abs().amax(-1, keepdim=True)
        tight = ctx.tol * 100 * scale
        active = (lam > tight) & (lam < upper - tight)
        # Adjoint KKT on the active set: Q w_u + G_A' w_λ = g, G_A w_u = 0 (Schur complement on Q).
        Qi_g = torch.cholesky_solve(g_u.unsqueeze(-1), L).squeeze(-1)
        rhs = (Qi_Gt.transpose(1, 2) @ g_u.unsqueeze(-1)).squeeze(-1)  # G Q^-1 g
        w_lam = _masked_solve(M, rhs, active, reg)
        w_u = Qi_g - (Qi_Gt @ w_lam.unsqueeze(-1)).squeeze(-1)
        return (*_param_grads(u, lam, w_u, w_lam), None, None, None)


def _param_grads(u: Tensor, lam: Tensor, w_u: Tensor, w_lam: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Gradients for ``(Q, q, G, h)`` from the KKT adjoint ``(w_u, w_λ)`` (OptNet); shapes as the inputs."""
    g_Q = -w_u.unsqueeze(-1) * u.unsqueeze(-2)
    g_G = -(w_lam.unsqueeze(-1) * u.unsqueeze(-2) + lam.unsqueeze(-1) * w_u.unsqueeze(-2))
    return g_Q, -w_u, g_G, w_lam


def _kernel_inputs(
    Q: Tensor, q: Tensor, G: Tensor, h: Tensor, lb: Tensor | None, ub: Tensor | None, penalty: float,
    lam0: Tensor | None,
) -> tuple[list[np.ndarray], np.ndarray, float, float]:  # fmt: skip
    """The kernel's arrays (``(B, 0)`` for absent bounds), the multipliers' buffer (warm-started from ``lam0``)
    and the dtype's tolerances."""
    batch = q.shape[0]
    tol, rel_reg = QPSettings.tolerances(q.dtype)
    none = np.zeros((batch, 0), dtype=q.detach().numpy().dtype)
    arrays = [none if t is None else t.detach().contiguous().numpy() for t in (Q, q, G, h, lb, ub)]
    lam = np.zeros((batch, _kernel.row_count(*arrays[2:])), dtype=arrays[1].dtype)
    if lam0 is not None:
        lam[:, : G.shape[1]] = np.clip(lam0.detach().numpy(), 0.0, penalty)
    return arrays, lam, tol, rel_reg


class _KernelQP(torch.autograd.Function):
    """The same method through the compiled CPU kernel (:mod:`safeliquid.qp._kernel`), one problem at a time.

    Takes the raw problem (the kernel symmetrises Q and stacks the bound rows
    itself) and returns ``(u, λ of all rows, slack, status, iterations)``.
    """

    @staticmethod
    def forward(
        ctx: Any,
        Q: Tensor,
        q: Tensor,
        G: Tensor,
        h: Tensor,
        lb: Tensor | None,
        ub: Tensor | None,
        penalty: float,
        max_iter: int,
        lam0: Tensor | None,
    ) -> tuple[Tensor, ...]:
        arrays, lam, tol, rel_reg = _kernel_inputs(Q, q, G, h, lb, ub, penalty, lam0)
        u, slack, status, iterations, Lq, W = _kernel.solve_checked(*arrays, penalty, tol, rel_reg, max_iter, lam)
        u_t, lam_t = torch.from_numpy(u), torch.from_numpy(lam)
        ctx.save_for_backward(G, lb, ub, u_t, lam_t)
        ctx.factors = (Lq, W)  # the backward reuses the factorisation
        ctx.penalty = penalty
        return u_t, lam_t, torch.from_numpy(slack), torch.from_numpy(status.astype(np.int64)), iterations

    @staticmethod
    def backward(ctx: Any, g_u: Tensor, *_: Any) -> tuple[Tensor | None, ...]:
        G, lb, ub, u, lam = ctx.saved_tensors
        tol, rel_reg = QPSettings.tolerances(u.dtype)
        none = np.zeros((u.shape[0], 0), dtype=u.numpy().dtype)
        grads = _kernel.grads_batch(
            *ctx.factors,
            G.detach().contiguous().numpy(),
            none if lb is None else lb.detach().contiguous().numpy(),
            none if ub is None else ub.detach().contiguous().numpy(),
            u.numpy(),
            lam.numpy(),
            g_u.detach().contiguous().numpy(),
            ctx.penalty,
            tol,
            rel_reg,
        )
        g_Q, g_q, g_G, g_h, g_lb, g_ub = (torch.from_numpy(x) for x in grads)
        return g_Q, g_q, g_G, g_h, g_lb if lb is not None else None, g_ub if ub is not None else None, None, None, None


def solve_native(
    Q: Tensor,
    q: Tensor,
    G: Tensor,
    h: Tensor,
    lb: Tensor | None,
    ub: Tensor | None,
    settings: QPSettings,
    warm_start: Tensor | None = None,
) -> QPSolution:
    """Solve a checked, broadcast batch (``Q (B,n,n)``, ``q (B,n)``, ``G (B,m,n)``, ``h (B,m)``, bounds ``(B,n)``).

    On CPU the compiled kernel runs; elsewhere (or while tracing) the batched-torch
    implementation. Raises ``ValueError`` if some ``Q`` is not positive definite.
    """
    m = G.shape[1]
    penalty, max_iter = settings.penalty, settings.max_iter
    if Q.device.type == "cpu" and not torch.jit.is_tracing():
        args = (Q, q, G, h, lb, ub, penalty, max_iter, warm_start)
        if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in args[:6]):
            u, lam_all, slack, status, iterations = _KernelQP.apply(*args)
        else:  # no graph to record: the forward-only kernel, no autograd.Function machinery, no factors kept
            arrays, lam, tol, rel_reg = _kernel_inputs(Q, q, G, h, lb, ub, penalty, warm_start)
            u_np, slack_np, status_np, lam, iterations = _kernel.forward_checked(
                *arrays, penalty, tol, rel_reg, max_iter, lam
            )
            return numpy_solution(u_np, lam, slack_np, status_np, iterations, m)
        return QPSolution(u=u, lam=lam_all[:, :m], slack=slack, status=status, iterations=int(iterations))
    Q = 0.5 * (Q + Q.transpose(1, 2))  # the objective only sees the symmetric part
    raise_if_not_pd(torch.linalg.cholesky_ex(Q.detach())[1] != 0)
    G_all, h_all, upper = _assemble(G, h, lb, ub, penalty)
    lam0 = None
    if warm_start is not None:
        lam0 = torch.cat([warm_start, torch.zeros_like(h_all[:, m:])], 1)
    u, lam_all, converged, resolved, iterations = _NativeQP.apply(Q, q, G_all, h_all, upper, max_iter, lam0)
    u, inside = _into_box(u, lb, ub)
    failed = converged & ~(inside & resolved)
    _kernel.raise_failed(np.where(failed.cpu().numpy(), _kernel.ILL_SCALED, 0).astype(np.int8))
    slack, status = residual_status(u, G, h, converged)
    return QPSolution(u=u, lam=lam_all[:, :m], slack=slack, status=status, iterations=int(iterations))


def numpy_solution(
    u: np.ndarray, lam: np.ndarray, slack: np.ndarray, status: np.ndarray, iterations: int, m: int
) -> QPSolution:
    """The forward-only kernel's numpy results as a :class:`QPSolution` (tensors sharing their memory; ``lam``
    all rows', of which the first ``m`` are the constraints')."""
    return QPSolution(
        u=torch.from_numpy(u),
        lam=torch.from_numpy(lam[:, :m]),
        slack=torch.from_numpy(slack),
        status=torch.from_numpy(status.astype(np.int64)),
        iterations=int(iterations),
    )


def raise_if_not_pd(bad: Tensor) -> None:
    """The kernel's named error where ``bad (B,)``: Q is not positive definite."""
    _kernel.raise_failed(np.where(bad.cpu().numpy(), _kernel.NOT_POSITIVE_DEFINITE, 0).astype(np.int8))


def _into_box(u: Tensor, lb: Tensor | None, ub: Tensor | None) -> tuple[Tensor, Tensor]:
    """The kernel's guard for the batched-torch path: on badly scaled data (``|h|``, ``|q|`` >~ 1e5) the dual
    iteration can stop with ``u (B, n)`` outside its hard bounds. Clip it in; ``inside (B,)`` is False where
    it missed by more than 1e-6 relative (1e-3 in float32), which the status reports as ``MAX_ITER``."""
    btol = max(1e-6, 100.0 * QPSettings.tolerances(u.dtype)[0])
    inside = torch.ones(u.shape[0], dtype=torch.bool, device=u.device)
    if lb is not None:
        inside &= (u.detach() >= lb - btol * (1.0 + lb.abs())).all(-1)
        u = torch.maximum(u, lb)
    if ub is not None:
        inside &= (u.detach() <= ub + btol * (1.0 + ub.abs())).all(-1)
        u = torch.minimum(u, ub)
    return u, inside


def residual_status(u: Tensor, G: Tensor, h: Tensor, converged: Tensor) -> tuple[Tensor, Tensor]:
    """Per-row violation ``max(G u - h, 0) (B, m)`` and status ``(B,)`` from it and convergence."""
    slack = (torch.bmm(G, u.detach().unsqueeze(-1)).squeeze(-1) - h.detach()).clamp_min(0.0)
    tol = QPSettings.tolerances(u.dtype)[0]
    if G.shape[1]:
        infeasible = (slack > 1e3 * tol * (1.0 + h.detach().abs().amax(-1, keepdim=True))).any(-1)
    else:
        infeasible = torch.zeros_like(converged)
    status = torch.where(
        ~converged,
        torch.full_like(converged, MAX_ITER, dtype=torch.long),
        torch.where(infeasible, INFEASIBLE, OPTIMAL),
    )
    return slack, status
