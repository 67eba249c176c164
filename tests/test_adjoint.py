import pytest
import torch

from safeliquid.nn import AutoNCP, LTCCell, Sequence, ltc_odeint


def _grads(cell, fn):
    cell.zero_grad()
    y, h = fn()
    (y.square().sum() + h.sum()).backward()
    return y.detach(), torch.cat([p.grad.flatten() for p in cell.parameters()])


def test_adjoint_gradients_match_backprop_through_the_same_solver():
    torch.manual_seed(4)
    cell = LTCCell(8, AutoNCP(19, 2), solver="rk4", ode_unfolds=4).double()
    x = torch.randn(3, 8, 8, dtype=torch.float64)
    ts = torch.rand(3, 8, dtype=torch.float64) + 0.2
    y_bptt, _ = _grads(cell, lambda: Sequence(cell)(x, timespans=ts))
    y_direct, g_direct = _grads(cell, lambda: ltc_odeint(cell, x, timespans=ts, adjoint=False))
    y_adj, g_adj = _grads(cell, lambda: ltc_odeint(cell, x, timespans=ts, adjoint=True))
    # torchdiffeq's rk4 is the 3/8 rule, ours the classical one: both near the fine solution.
    cell.ode_unfolds = 64
    with torch.no_grad():
        y_fine, _ = Sequence(cell)(x, timespans=ts)
    cell.ode_unfolds = 4
    for y in (y_bptt, y_direct):
        torch.testing.assert_close(y, y_fine, atol=1e-3, rtol=0)
    torch.testing.assert_close(y_adj, y_direct, atol=1e-12, rtol=0)
    rel = float((g_adj - g_direct).norm() / g_direct.norm())
    # The adjoint re-integrates the state backwards: a real error, which vanishes as the step shrinks.
    cell.ode_unfolds = 16
    _, g_direct16 = _grads(cell, lambda: ltc_odeint(cell, x, timespans=ts, adjoint=False))
    _, g_adj16 = _grads(cell, lambda: ltc_odeint(cell, x, timespans=ts, adjoint=True))
    rel16 = float((g_adj16 - g_direct16).norm() / g_direct16.norm())
    assert 0 < rel < 5e-2
    assert rel16 < rel / 20, (rel, rel16)  # 4th order: 4x finer steps, ~256x smaller error


def test_adjoint_rejects_non_ltc():
    with pytest.raises(TypeError, match="integrates an LTCCell"):
        ltc_odeint(torch.nn.GRUCell(3, 3), torch.randn(1, 2, 3))
