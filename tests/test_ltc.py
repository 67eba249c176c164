import numpy as np
import pytest
import torch
from ncps.torch import LTC as RefLTC
from ncps.wirings import AutoNCP as RefAutoNCP
from ncps.wirings import FullyConnected as RefFC

from safeliquid.nn import AutoNCP, LTCCell, Sequence, ltc_from_ncps
from safeliquid.nn._fused import fused_sequence


def _reference(wiring, implicit=True, dtype=torch.float32, unfolds=6):
    ref = RefLTC(8, wiring, batch_first=True, ode_unfolds=unfolds, implicit_param_constraints=implicit).to(dtype)
    with torch.no_grad():  # move parameters away from their init so the test is not trivial
        for p in ref.parameters():
            if p.requires_grad:
                p.add_(0.1 * torch.randn_like(p)).abs_() if not implicit else p.add_(0.1 * torch.randn_like(p))
    return ref


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-10)], ids=["float32", "float64"])
@pytest.mark.parametrize("wiring", ["autoncp", "fully_connected", "no_implicit"])
def test_matches_ncps_on_sequences(dtype, tol, wiring):
    implicit = wiring != "no_implicit"
    w = RefAutoNCP(19, 2) if wiring != "fully_connected" else RefFC(12, 3)
    ref = _reference(w, implicit, dtype)
    ours = ltc_from_ncps(ref)
    x = torch.randn(5, 20, 8, dtype=dtype)
    y_ref, h_ref = ref(x)
    y, h = Sequence(ours)(x)
    assert y.dtype == dtype
    torch.testing.assert_close(y, y_ref, atol=tol, rtol=0)
    torch.testing.assert_close(h, h_ref, atol=tol, rtol=0)


def test_matches_ncps_with_uniform_timespans_and_unfolds():
    ref = _reference(RefAutoNCP(19, 2), dtype=torch.float64, unfolds=3)
    ours = ltc_from_ncps(ref)
    x = torch.randn(1, 12, 8, dtype=torch.float64)
    ts = torch.full((1, 12), 0.3, dtype=torch.float64)
    y_ref, _ = ref(x, timespans=ts)
    y, _ = Sequence(ours)(x, timespans=ts)
    torch.testing.assert_close(y, y_ref, atol=1e-10, rtol=0)


def test_per_sample_dt_is_per_sample():
    """Each batch row gets its own dt: batched result equals running each sample alone (ncps issue #81)."""
    cell = LTCCell(8, AutoNCP(19, 2)).double()
    x = torch.randn(19, 8, dtype=torch.float64)  # batch == neurons, where mixing rows and neurons hides
    h = torch.randn(19, 19, dtype=torch.float64) * 0.2
    dt = torch.rand(19, dtype=torch.float64) + 0.1
    y, hn = cell(x, h, dt)
    for b in range(19):
        yb, hb = cell(x[b : b + 1], h[b : b + 1], float(dt[b]))
        torch.testing.assert_close(hn[b : b + 1], hb, atol=1e-12, rtol=0)
        torch.testing.assert_close(y[b : b + 1], yb, atol=1e-12, rtol=0)


def test_state_stays_bounded_under_huge_inputs():
    """The fused semi-implicit step is a positive weighted average: bounded whatever the input."""
    cell = LTCCell(8, AutoNCP(19, 2), solver="fused")
    lo, hi = cell.state_bounds()
    h = torch.empty(16, 19).uniform_(lo, hi)
    with torch.no_grad():
        for _ in range(50):
            x = torch.where(torch.rand(16, 8) < 0.5, -1e6, 1e6)
            _, h = cell(x, h, 1.0)
            assert torch.isfinite(h).all()
            assert h.min() >= lo - 1e-6 and h.max() <= hi + 1e-6


def test_positivity_survives_any_raw_parameters():
    cell = LTCCell(8, AutoNCP(19, 2))
    with torch.no_grad():
        for name in ("gleak", "cm", "w", "sensory_w"):
            getattr(cell, name).fill_(-50.0)  # an optimiser could drive raw values here
    lo, hi = cell.state_bounds()
    _, h = cell(torch.randn(4, 8), torch.zeros(4, 19), 1.0)
    assert torch.isfinite(h).all() and h.min() >= lo - 1e-6 and h.max() <= hi + 1e-6


def test_solvers_converge_to_one_trajectory():
    torch.manual_seed(1)
    cell = LTCCell(8, AutoNCP(19, 2)).double()
    x = torch.randn(3, 10, 8, dtype=torch.float64)

    def run(solver, unfolds):
        cell.solver, cell.ode_unfolds = solver, unfolds
        with torch.no_grad():
            return Sequence(cell)(x, timespans=0.5)[1]

    exact = run("rk4", 400)
    for solver, order in (("fused", 1), ("euler", 1), ("rk4", 4)):
        errors = [float((run(solver, u) - exact).abs().max()) for u in (4, 16, 64)]
        assert errors[0] > errors[1] > errors[2], (solver, errors)
        assert errors[2] < (1e-2 if order == 1 else 1e-8), (solver, errors)
        # The observed order of convergence matches the method's.
        rate = np.log2(errors[1] / errors[2]) / 2
        assert rate > 0.8 * order, (solver, rate)


def test_batch_one_kernel_equals_torch_path_and_tracks_parameter_updates():
    cell = LTCCell(8, AutoNCP(19, 2))
    opt = torch.optim.SGD(cell.parameters(), lr=0.5)
    x, h = torch.randn(1, 8), torch.randn(1, 19) * 0.3
    for dt in (1.0, 0.05, 1.0):
        with torch.inference_mode():
            y_fast, h_fast = cell(x, h, dt)
        y_ref, h_ref = cell.step(cell.prepare(), x, h, dt)  # grad enabled: the torch path
        torch.testing.assert_close(y_fast, y_ref.detach(), atol=2e-6, rtol=0)
        torch.testing.assert_close(h_fast, h_ref.detach(), atol=2e-6, rtol=0)
        y_ref.sum().backward()
        opt.step()  # parameters change; the cached kernel must notice
        opt.zero_grad()
    assert h_fast.data_ptr() != h.data_ptr()


@pytest.mark.parametrize("cm_shape", [(1, 1), (3, 1), (1, 2), (3, 2)], ids=["shared", "per-step", "per-sample", "both"])
def test_fused_backward_gradcheck(cm_shape):
    torch.manual_seed(2)
    t, b, n, e = 3, 2, 5, 7
    args = [
        torch.randn(b, n),
        torch.rand(t, b, 2 * n) + 1.0,
        torch.rand(*cm_shape, n) + 0.5,
        torch.randn(n, e),
        torch.randn(e),
        torch.rand(e, 2 * n),
    ]
    args = [a.double().requires_grad_() for a in args]
    assert torch.autograd.gradcheck(lambda *a: fused_sequence(*a, 4), args)


def test_sparse_and_dense_forms_agree_in_value_and_gradient():
    torch.manual_seed(3)
    cell = LTCCell(8, AutoNCP(19, 2)).double()
    x, h = torch.randn(4, 8, dtype=torch.float64), torch.randn(4, 19, dtype=torch.float64) * 0.3
    grads = []
    for dense in (False, True):
        cell._dense = cell._sensory_dense = dense
        cell.zero_grad()
        y, hn = cell(x, h, 0.7)
        (y.square().sum() + hn.sum()).backward()
        grads.append((y.detach(), {k: p.grad.clone() for k, p in cell.named_parameters()}))
    torch.testing.assert_close(grads[0][0], grads[1][0], atol=1e-12, rtol=0)
    for k in grads[0][1]:
        torch.testing.assert_close(grads[0][1][k], grads[1][1][k], atol=1e-10, rtol=1e-8, msg=k)


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")  # input checks run once at trace time, by design
@pytest.mark.filterwarnings("ignore:You are using the legacy TorchScript-based ONNX export")  # chosen: it is tested
@pytest.mark.filterwarnings("ignore:Exporting aten.*index operator")  # our indices are never negative
def test_export_trace_and_onnx(tmp_path):
    onnxruntime = pytest.importorskip("onnxruntime")  # a test extra: installed by `make test`
    cell = LTCCell(8, AutoNCP(19, 2)).eval()
    x, h = torch.randn(1, 8), torch.randn(1, 19) * 0.3
    with torch.no_grad():
        y_ref, h_ref = cell.step(cell.prepare(), x, h, 1.0)
        traced = torch.jit.trace(cell, (x, h))
        y_t, h_t = traced(x, h)
    torch.testing.assert_close(y_t, y_ref, atol=1e-6, rtol=0)
    torch.testing.assert_close(h_t, h_ref, atol=1e-6, rtol=0)
    path = str(tmp_path / "ltc.onnx")
    torch.onnx.export(cell, (x, h), path, input_names=["x", "h"], output_names=["y", "h_next"], dynamo=False)
    sess = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    y_o, h_o = sess.run(None, {"x": x.numpy(), "h": h.numpy()})
    np.testing.assert_allclose(y_o, y_ref.numpy(), atol=1e-5)
    np.testing.assert_allclose(h_o, h_ref.numpy(), atol=1e-5)


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda c: c(torch.randn(2, 7), None, 1.0), r"x must have shape \(B, 8\), got \(2, 7\)"),
        (lambda c: c(torch.randn(2, 8), torch.zeros(2, 5), 1.0), r"h must have shape \(2, 19\)"),
        (lambda c: c(torch.tensor([[float("nan")] * 8]), None, 1.0), "x contains NaN or inf"),
        (lambda c: c(torch.randn(1, 8), torch.full((1, 19), float("inf")), 1.0), "h contains NaN or inf"),
        (lambda c: c(torch.randn(1, 8), None, 0.0), "dt must be a positive finite number, got 0.0"),
        (lambda c: c(torch.randn(2, 8), None, -1.0), "dt must be a positive finite number"),
        (lambda c: c(torch.randn(2, 8), None, torch.ones(3)), r"dt must be .* shape \(2,\)"),
        (lambda c: c(torch.randn(2, 8), None, torch.tensor([1.0, -1.0])), "dt must be positive and finite"),
        (lambda c: c(torch.randn(2, 8, dtype=torch.float64), None, 1.0), "parameters are torch.float32"),
    ],
)
def test_bad_input_is_named(call, match):
    cell = LTCCell(8, AutoNCP(19, 2))
    for mode in (torch.enable_grad, torch.inference_mode):  # both the torch path and the batch-1 kernel
        with mode(), pytest.raises((ValueError, TypeError), match=match):
            call(cell)


def test_bad_construction_is_named():
    with pytest.raises(ValueError, match="solver must be one of"):
        LTCCell(8, 19, solver="dopri")
    with pytest.raises(ValueError, match="ode_unfolds"):
        LTCCell(8, 19, ode_unfolds=0)


def test_backward_twice_with_retain_graph():
    cell = LTCCell(8, AutoNCP(19, 2))
    y, _ = Sequence(cell)(torch.randn(2, 4, 8))
    y.sum().backward(retain_graph=True)
    first = cell.sigma.grad.clone()
    y.sum().backward()
    torch.testing.assert_close(cell.sigma.grad, 2 * first)


@pytest.mark.parametrize("timespans", ["float", "per-sample"])
def test_sequence_kernel_equals_step_by_step(timespans):
    """The whole-sequence kernel and the one-step path agree in values and in every parameter gradient."""
    torch.manual_seed(5)
    cell = LTCCell(8, AutoNCP(19, 2)).double()
    x = torch.randn(4, 7, 8, dtype=torch.float64)
    h0 = torch.randn(4, 19, dtype=torch.float64) * 0.2
    ts = 0.4 if timespans == "float" else torch.rand(4, 7, dtype=torch.float64) + 0.1
    results = []
    for whole in (True, False):
        cell.zero_grad()
        prep = cell.prepare()
        if whole:
            y, h = cell.sequence(prep, x, h0, ts)
        else:
            y, h = super(LTCCell, cell).sequence(prep, x, h0, ts)  # the generic per-step loop
        (y.square().sum() + h.sum()).backward()
        results.append((y.detach(), h.detach(), {k: p.grad.clone() for k, p in cell.named_parameters()}))
    (y1, h1, g1), (y2, h2, g2) = results
    torch.testing.assert_close(y1, y2, atol=1e-12, rtol=0)
    torch.testing.assert_close(h1, h2, atol=1e-12, rtol=0)
    for k in g1:
        torch.testing.assert_close(g1[k], g2[k], atol=1e-10, rtol=1e-9, msg=k)


@pytest.mark.filterwarnings("ignore:overflow encountered in dot:RuntimeWarning")  # the overflow being tested
def test_batch_one_huge_finite_input_is_accepted_not_mistaken_for_inf():
    """x.x overflows float32 for |x| ~ 1e20: the fast check must defer to the exact one, not raise."""
    cell = LTCCell(8, AutoNCP(19, 2))
    x, h = torch.full((1, 8), 1e20), torch.zeros(1, 19)
    with torch.inference_mode():
        y_fast, h_fast = cell(x, h, 1.0)
    y_ref, h_ref = cell.step(cell.prepare(), x, h, 1.0)
    torch.testing.assert_close(h_fast, h_ref.detach(), atol=2e-6, rtol=0)
    torch.testing.assert_close(y_fast, y_ref.detach(), atol=2e-6, rtol=0)


def test_changing_solver_settings_after_use_takes_effect_on_the_batch_one_path():
    cell = LTCCell(8, AutoNCP(19, 2))
    x, h = torch.randn(1, 8), torch.randn(1, 19) * 0.3
    with torch.inference_mode():
        cell(x, h, 1.0)  # builds the fused batch-1 kernel
    for solver, unfolds in (("fused", 2), ("euler", 3), ("rk4", 2)):
        cell.solver, cell.ode_unfolds = solver, unfolds
        with torch.inference_mode():
            y_fast, h_fast = cell(x, h, 1.0)
        y_ref, h_ref = cell.step(cell.prepare(), x, h, 1.0)
        torch.testing.assert_close(h_fast, h_ref.detach(), atol=2e-6, rtol=0, msg=f"{solver}/{unfolds}")
        torch.testing.assert_close(y_fast, y_ref.detach(), atol=2e-6, rtol=0, msg=f"{solver}/{unfolds}")
    with pytest.raises(ValueError, match="ode_unfolds must be a positive integer"):
        cell.ode_unfolds = 0
