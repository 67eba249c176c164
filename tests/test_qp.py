"""The native QP against cvxpy (Clarabel, high accuracy) and finite differences."""

import math

import cvxpy as cp
import numpy as np
import pytest
import torch

from safeliquid.qp import INFEASIBLE, OPTIMAL, solve_qp

F64 = torch.float64


def random_qp(rng, n, m, bounds=True, dtype=F64):
    A = rng.standard_normal((n, n))
    Q = A @ A.T + 0.1 * np.eye(n)
    q = rng.standard_normal(n) * 3
    G = rng.standard_normal((m, n))
    h = rng.random(m)
    lb, ub = (-rng.random(n) * 2, rng.random(n) * 2) if bounds else (None, None)
    t = lambda a: None if a is None else torch.tensor(a, dtype=dtype)  # noqa: E731
    return t(Q), t(q), t(G), t(h), t(lb), t(ub)


def clarabel(Q, q, G, h, lb=None, ub=None):
    n = q.shape[0]
    u = cp.Variable(n)
    cons = [G.numpy() @ u <= h.numpy()]
    if lb is not None:
        cons += [u >= lb.numpy(), u <= ub.numpy()]
    prob = cp.Problem(cp.Minimize(0.5 * cp.quad_form(u, cp.psd_wrap(Q.numpy())) + q.numpy() @ u), cons)
    try:
        prob.solve(solver=cp.CLARABEL, tol_gap_abs=1e-10, tol_gap_rel=1e-10, tol_feas=1e-10)
    except cp.error.SolverError:
        return "reference_failed", None
    return prob.status, u.value


def test_matches_clarabel_on_hundreds_of_random_problems():
    rng = np.random.default_rng(0)
    worst, solved, failed = 0.0, 0, 0
    for _ in range(300):
        n, m = int(rng.integers(2, 13)), int(rng.integers(1, 41))
        Q, q, G, h, lb, ub = random_qp(rng, n, m, bounds=bool(rng.integers(0, 2)))
        status, u_ref = clarabel(Q, q, G, h, lb, ub)
        sol = solve_qp(Q, q[None], G, h, lb, ub)
        if status == "reference_failed":
            failed += 1
            continue
        if status != "optimal":
            assert status == "infeasible", status
            assert int(sol.status[0]) == INFEASIBLE
            continue
        assert int(sol.status[0]) == OPTIMAL
        worst = max(worst, float(np.abs(sol.u[0].numpy() - u_ref).max()))
        solved += 1
    assert solved > 150 and failed < 5, (solved, failed)
    assert worst < 1e-6


def test_batched_equals_one_at_a_time_and_float32_agrees():
    rng = np.random.default_rng(1)
    probs = [random_qp(rng, 5, 12) for _ in range(16)]
    Q, q, G, h, lb, ub = (torch.stack([p[i] for p in probs]) for i in range(6))
    batched = solve_qp(Q, q, G, h, lb, ub).u
    for b in range(16):
        torch.testing.assert_close(batched[b : b + 1], solve_qp(Q[b], q[b : b + 1], G[b], h[b], lb[b], ub[b]).u)
    single = solve_qp(Q.float(), q.float(), G.float(), h.float(), lb.float(), ub.float())
    assert single.u.dtype == torch.float32
    torch.testing.assert_close(single.u.double(), batched, atol=1e-3, rtol=0)


def _fd_check(fn, tensors, eps=1e-6, atol=1e-5, rtol=1e-4):
    """Central finite differences of sum(w * fn(...)) against autograd, for every entry of every tensor."""
    tensors = [t.clone().requires_grad_() for t in tensors]
    w = torch.randn_like(fn(*tensors))
    (fn(*tensors) * w).sum().backward()
    for t in tensors:
        fd = torch.zeros_like(t)
        flat, fd_flat = t.detach().view(-1), fd.view(-1)
        for i in range(flat.numel()):
            old = float(flat[i])
            flat[i] = old + eps
            plus = float((fn(*[x.detach() for x in tensors]) * w).sum())
            flat[i] = old - eps
            minus = float((fn(*[x.detach() for x in tensors]) * w).sum())
            flat[i] = old
            fd_flat[i] = (plus - minus) / (2 * eps)
        torch.testing.assert_close(t.grad, fd, atol=atol, rtol=rtol)


@pytest.mark.parametrize("seed", range(48))
def test_gradients_match_finite_differences(seed):
    rng = np.random.default_rng(100 + seed)
    n, m = int(rng.integers(2, 6)), int(rng.integers(3, 4 * 6))  # includes m >= 3n
    Q, q, G, h, lb, ub = random_qp(rng, n, m)
    sol = solve_qp(Q, q[None], G, h, lb, ub)
    if int(sol.status[0]) != OPTIMAL:
        pytest.skip("infeasible draw")  # the elastic case has its own gradient test
    lam = torch.cat([sol.lam[0]])
    margin = (h - G @ sol.u[0]).abs()
    if bool(((lam.abs() < 1e-6) & (margin < 1e-6)).any()):
        pytest.skip("weakly active constraint: the solution map is not differentiable there")
    _fd_check(lambda Q_, q_, G_, h_, lb_, ub_: solve_qp(Q_, q_[None], G_, h_, lb_, ub_).u, [Q, q, G, h, lb, ub])


def test_shared_parameters_get_the_sum_of_per_sample_gradients():
    rng = np.random.default_rng(7)
    Q, _, G, h, lb, ub = random_qp(rng, 4, 12)
    qs = torch.tensor(rng.standard_normal((8, 4)) * 3)
    Gs = G.clone().requires_grad_()
    solve_qp(Q, qs, Gs, h, lb, ub).u.sum().backward()
    total = torch.zeros_like(G)
    for b in range(8):
        Gb = G.clone().requires_grad_()
        solve_qp(Q, qs[b : b + 1], Gb, h, lb, ub).u.sum().backward()
        total += Gb.grad
    torch.testing.assert_close(Gs.grad, total)  # qpth returns the batch mean here


def test_infeasible_problem_is_solved_in_elastic_form_with_zero_slack_iff_feasible():
    # u >= 1 and u <= -1 cannot both hold: the elastic solution splits the violation.
    Q = torch.eye(1, dtype=F64)
    G = torch.tensor([[-1.0], [1.0]], dtype=F64)
    h = torch.tensor([-1.0, -1.0], dtype=F64)
    sol = solve_qp(Q, torch.zeros(1, 1, dtype=F64), G, h)
    assert int(sol.status[0]) == INFEASIBLE
    assert torch.isfinite(sol.u).all() and float(sol.slack.sum()) == pytest.approx(2.0, abs=1e-6)
    # A feasible one in the same batch is untouched by the penalty.
    sol2 = solve_qp(Q, torch.tensor([[0.0], [3.0]], dtype=F64), G[:1], h[:1])
    assert sol2.status.tolist() == [OPTIMAL, OPTIMAL] and float(sol2.slack.abs().max()) < 1e-9  # solver tolerance
    torch.testing.assert_close(sol2.u, torch.tensor([[1.0], [1.0]], dtype=F64))


def test_infeasible_with_hard_bounds_returns_least_violation_inside_bounds():
    Q = torch.eye(2, dtype=F64)
    G = torch.tensor([[-1.0, 0.0]], dtype=F64)  # u0 >= 5, but u0 <= 1 by the bounds
    h = torch.tensor([-5.0], dtype=F64)
    sol = solve_qp(Q, torch.zeros(1, 2, dtype=F64), G, h, -torch.ones(2, dtype=F64), torch.ones(2, dtype=F64))
    assert int(sol.status[0]) == INFEASIBLE
    torch.testing.assert_close(sol.u, torch.tensor([[1.0, 0.0]], dtype=F64))
    assert float(sol.slack[0, 0]) == pytest.approx(4.0)


@pytest.mark.parametrize("kernel", [True, False], ids=["kernel", "batched-torch"])
@pytest.mark.parametrize("scale", [1e6, 1e8])
def test_badly_scaled_data_never_leave_the_input_box(scale, kernel, monkeypatch):
    # |q| and |h| far beyond any sane control problem: the dual's threshold grows with them, so a converged
    # iteration can leave u outside the bounds; it is refined until u meets them, on either path.
    if not kernel:  # what runs on a non-CPU device
        monkeypatch.setattr(torch.jit, "is_tracing", lambda: True)
    gen = torch.Generator().manual_seed(int(math.log10(scale)))
    B, n, m = 100, 3, 5
    q = torch.randn(B, n, generator=gen, dtype=F64) * scale
    G, h = torch.randn(B, m, n, generator=gen, dtype=F64), torch.randn(B, m, generator=gen, dtype=F64) * scale
    lb, ub = -torch.ones(B, n, dtype=F64), torch.ones(B, n, dtype=F64)
    sol = solve_qp(torch.eye(n, dtype=F64).expand(B, n, n), q, G, h, lb, ub)
    assert torch.isfinite(sol.u).all()
    assert ((sol.u >= lb) & (sol.u <= ub)).all()
    assert set(sol.status.tolist()) <= {OPTIMAL, INFEASIBLE}


@pytest.mark.parametrize("kernel", [True, False], ids=["kernel", "batched-torch"])
@pytest.mark.parametrize("scale", [1e3, 1e6, 1e9])
def test_a_far_reference_is_projected_onto_its_bounds_exactly(scale, kernel, monkeypatch):
    # Q = I and bounds only: the solution is the clip of -q, however far -q lies outside the box (up to the
    # dtype's resolution), reported optimal.
    if not kernel:
        monkeypatch.setattr(torch.jit, "is_tracing", lambda: True)
    gen = torch.Generator().manual_seed(int(math.log10(scale)))
    B, n = 64, 3
    q = torch.randn(B, n, generator=gen, dtype=F64) * scale
    lb = -torch.rand(B, n, generator=gen, dtype=F64) - 0.5
    ub = torch.rand(B, n, generator=gen, dtype=F64) + 0.5
    sol = solve_qp(torch.eye(n, dtype=F64), q, lb=lb, ub=ub)
    assert sol.status.tolist() == [OPTIMAL] * B
    torch.testing.assert_close(sol.u, torch.minimum(torch.maximum(-q, lb), ub), atol=2e-6, rtol=0)


@pytest.mark.parametrize("kernel", [True, False], ids=["kernel", "batched-torch"])
@pytest.mark.parametrize(("scale", "rows"), [(1e12, False), (1e12, True), (1e200, False), (1e200, True)])
def test_a_reference_beyond_the_dtypes_resolution_is_refused_by_name(scale, rows, kernel, monkeypatch):
    # u = -(Q^-1 q + Q^-1 G'λ) cancels |Q^-1 q| ~ 1e12 against the multipliers' term to ~1e-4: beyond the
    # bounds' tolerance, so the solver names q instead of returning a u it cannot vouch for.
    if not kernel:
        monkeypatch.setattr(torch.jit, "is_tracing", lambda: True)
    G = torch.tensor([[1.0, 0.0]], dtype=F64) if rows else None
    h = torch.tensor([10.0], dtype=F64) if rows else None
    one = torch.ones(2, dtype=F64)
    with pytest.raises(ValueError, match="q is ill-scaled for batch elements \\[0\\]"):
        solve_qp(torch.eye(2, dtype=F64), torch.full((1, 2), scale, dtype=F64), G, h, -one, one)


@pytest.mark.parametrize("dtype", [F64, torch.float32])
def test_compiled_kernel_and_batched_torch_paths_agree(dtype, monkeypatch):
    """The CPU kernel and the device-generic batched-torch solver: same solution and gradients."""
    rng = np.random.default_rng(5)
    probs = [random_qp(rng, 4, 10) for _ in range(8)]
    Q, q, G, h, lb, ub = (torch.stack([p[i] for p in probs]).to(dtype) for i in range(6))
    out = []
    for kernel in (True, False):
        if not kernel:  # what runs on a non-CPU device
            monkeypatch.setattr(torch.jit, "is_tracing", lambda: True)
        leaves = [t.clone().requires_grad_() for t in (Q, q, G, h, lb, ub)]
        sol = solve_qp(*leaves)
        assert sol.status.tolist() == [0] * 8
        (sol.u * torch.arange(1.0, 5.0, dtype=dtype)).sum().backward()
        out.append((sol.u.detach(), sol.lam.detach(), sol.slack, [t.grad for t in leaves]))
    tol = 1e-8 if dtype == F64 else 2e-3
    torch.testing.assert_close(out[0][0], out[1][0], atol=tol, rtol=0)
    torch.testing.assert_close(out[0][1], out[1][1], atol=tol * 100, rtol=tol)
    torch.testing.assert_close(out[0][2], out[1][2], atol=tol, rtol=0)
    for a, b in zip(out[0][3], out[1][3], strict=True):
        torch.testing.assert_close(a, b, atol=tol * 10, rtol=tol)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_the_no_grad_fast_path_gives_the_general_paths_answer(dtype):
    """Batched contiguous CPU tensors with no graph to record go straight to the kernel (no checks or copies in
    torch); the answer is the one the differentiable path and the expanded (non-contiguous) inputs give."""
    rng = np.random.default_rng(3)
    probs = [random_qp(rng, 4, 6, dtype=dtype) for _ in range(20)]
    Q, q, G, h, lb, ub = (torch.stack(parts) for parts in zip(*probs, strict=True))
    fast = solve_qp(Q, q, G, h, lb, ub)
    for other in (
        solve_qp(Q, q.clone().requires_grad_(True), G, h, lb, ub),  # a graph to record: the autograd Function
        solve_qp(Q.transpose(1, 2).contiguous().transpose(1, 2), q, G, h, lb, ub),  # non-contiguous Q
    ):
        torch.testing.assert_close(fast.u, other.u.detach())
        torch.testing.assert_close(fast.lam, other.lam.detach())
        torch.testing.assert_close(fast.slack, other.slack.detach())
        assert torch.equal(fast.status, other.status) and fast.status.dtype == torch.int64
    with pytest.raises(ValueError, match="q contains NaN"):
        solve_qp(Q, torch.full_like(q, float("nan")), G, h, lb, ub)
    with pytest.raises(ValueError, match=r"G must have shape \(20, 6, 4\)"):
        solve_qp(Q, q, G[:, :, :3].contiguous(), h, lb, ub)
