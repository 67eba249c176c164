"""The safety filter and the BarrierNet layer on the CBF-QP."""

import pytest
import torch

from safeliquid.safety import (
    Barrier,
    BarrierLayer,
    ConstraintSet,
    DoubleIntegrator,
    SafetyFilter,
    position,
    sphere_obstacle,
)

F64 = torch.float64


def setup(u_max=5.0):
    model = DoubleIntegrator(2)
    g = torch.Generator().manual_seed(0)
    samples = torch.randn(32, 4, generator=g, dtype=F64) * 2
    barriers = sphere_obstacle("disc", position([0, 1]), [0.0, 0.0], 1.0)
    barriers[0].gains = [1.0, 1.0]
    cs = ConstraintSet(model, barriers, samples, u_min=[-u_max] * 2, u_max=[u_max] * 2)
    return cs


def test_safe_actions_pass_unchanged_and_unsafe_ones_are_projected():
    cs = setup()
    filt = SafetyFilter(cs)
    # At (2, 0) moving away: any action that keeps moving away is untouched.
    x = torch.tensor([[2.0, 0.0, 1.0, 0.0], [1.2, 0.0, -3.0, 0.0]], dtype=F64)
    u_raw = torch.tensor([[0.5, 0.0], [-5.0, 0.0]], dtype=F64)
    u, rec = filt.filter(x, u_raw)
    assert float(rec.intervention[0]) < 1e-9 and not bool(rec.active[0].any())
    # Rushing at the disc at full force: the filter brakes (u_x pushed up) and reports it.
    assert float(u[1, 0]) > -5.0 and float(rec.intervention[1]) > 0.1 and bool(rec.active[1, 0])
    G, b, _ = cs.rows(x)
    assert bool(((G @ u.unsqueeze(-1)).squeeze(-1) <= b + 1e-8).all())  # every row holds
    assert bool((u.abs() <= 5.0 + 1e-12).all())
    assert rec.names == ["disc"] and rec.status.tolist() == [0, 0]
    torch.testing.assert_close(rec.barrier[:, 0], x[:, :2].square().sum(1) - 1.0)


def test_infeasible_state_reports_slack_and_stays_within_the_input_bounds():
    cs = setup(u_max=0.5)  # too weak to brake in time
    # With gains (5, 5) the HOCBF row at this state needs 2*1.05*u_x >= 49.4, i.e. u_x >= 23.5 > 0.5.
    cs.barriers[0].gains = [5.0, 5.0]
    u, rec = SafetyFilter(cs).filter(torch.tensor([[1.05, 0.0, -4.0, 0.0]], dtype=F64), torch.zeros(1, 2, dtype=F64))
    assert rec.status_names() == ["infeasible"] and float(rec.slack[0, 0]) > 0
    assert float(u[0, 0]) == pytest.approx(0.5)  # brakes as hard as it may


def test_barrier_layer_is_differentiable_in_reference_gains_and_weights():
    cs = setup()
    layer = BarrierLayer(cs)
    x = torch.tensor([[1.3, 0.1, -2.0, 0.3], [0.0, 1.5, 0.2, -1.5]], dtype=F64)
    u_ref = torch.tensor([[-3.0, 0.0], [0.0, -3.0]], dtype=F64, requires_grad=True)
    gains = torch.tensor([[0.8, 1.2], [1.5, 0.6]], dtype=F64, requires_grad=True)
    h_diag = torch.tensor([[1.0, 2.0], [2.0, 1.0]], dtype=F64, requires_grad=True)
    u, rec = layer(x, u_ref, gains, h_diag)
    assert bool(rec.active.all())
    (u * torch.tensor([[1.0, 2.0]], dtype=F64)).sum().backward()
    for t in (u_ref, gains, h_diag):
        assert t.grad is not None and torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0
    # Finite differences on the gains: the gradient is the derivative of the safe action.
    eps = 1e-6
    for i in range(2):
        for j in range(2):
            gp, gm = gains.detach().clone(), gains.detach().clone()
            gp[i, j] += eps
            gm[i, j] -= eps
            up = layer(x, u_ref.detach(), gp, h_diag.detach())[0]
            um = layer(x, u_ref.detach(), gm, h_diag.detach())[0]
            fd = float(((up - um).detach() * torch.tensor([[1.0, 2.0]], dtype=F64)).sum() / (2 * eps))
            assert gains.grad[i, j].item() == pytest.approx(fd, rel=1e-5, abs=1e-7)


@pytest.mark.parametrize(
    "call,match",
    [
        (
            lambda f, l: f.filter(torch.full((1, 4), float("nan"), dtype=F64), torch.zeros(1, 2, dtype=F64)),
            "x contains NaN",
        ),
        (
            lambda f, l: f.filter(torch.zeros(1, 4, dtype=F64), torch.zeros(1, 3, dtype=F64)),
            r"u_raw must have shape \(1, 2\)",
        ),
        (
            lambda f, l: l(torch.ones(1, 4, dtype=F64), torch.zeros(1, 2, dtype=F64), -torch.ones(1, 2, dtype=F64)),
            "gains must be positive",
        ),
        (
            lambda f, l: l(torch.ones(1, 4, dtype=F64), torch.zeros(1, 2, dtype=F64), torch.ones(1, 3, dtype=F64)),
            r"gains must have shape \(1, 2\)",
        ),
    ],
)
def test_bad_input_is_named(call, match):
    cs = setup()
    with pytest.raises(ValueError, match=match):
        call(SafetyFilter(cs), BarrierLayer(cs))


def test_custom_barrier_in_a_few_lines():
    """Authoring a new constraint: a speed limit |v|^2 <= 4 on the double integrator (relative degree 1)."""
    model = DoubleIntegrator(2)
    speed = Barrier("speed", lambda x: 4.0 - x[:, 2:].square().sum(1))
    cs = ConstraintSet(model, [speed], torch.randn(16, 4, dtype=F64))
    assert cs.barriers[0].relative_degree == 1
    u, rec = SafetyFilter(cs).filter(
        torch.tensor([[0.0, 0.0, 1.99, 0.0]], dtype=F64), torch.tensor([[10.0, 0.0]], dtype=F64)
    )
    assert float(u[0, 0]) < 10.0 and bool(rec.active[0, 0])
