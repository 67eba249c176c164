import pytest
import torch
from ncps.torch import CfCCell as RefCfCCell
from ncps.torch import WiredCfCCell as RefWiredCfCCell
from ncps.wirings import AutoNCP as RefAutoNCP

from safeliquid.nn import CELLS, AutoNCP, CfCCell, Sequence, make_cell


@pytest.mark.parametrize("name", CELLS)
def test_every_cell_has_the_one_step_interface(name):
    cell = make_cell(name, 8, 19, outputs=2)
    for batch in (1, 5):
        x = torch.randn(batch, 8)
        y, h = cell(x, None, 0.1)
        assert y.shape == (batch, cell.output_size) and h.shape == (batch, cell.state_size)
        y2, h2 = cell(x, h, torch.rand(batch) + 0.05)  # per-sample dt
        assert torch.isfinite(y2).all() and h2.shape == h.shape


@pytest.mark.parametrize("name", CELLS)
def test_every_cell_trains_through_a_sequence(name):
    cell = make_cell(name, 8, 19, outputs=2)
    y, _ = Sequence(cell)(torch.randn(3, 6, 8), timespans=torch.rand(3, 6) + 0.1)
    assert y.shape == (3, 6, cell.output_size)
    y.square().mean().backward()
    missing = [n for n, p in cell.named_parameters() if p.requires_grad and (p.grad is None or p.grad.abs().sum() == 0)]
    # The LTC's sparse masks leave masked entries without gradient by design; every tensor still gets some.
    assert not missing, missing


def test_continuous_cells_depend_on_dt_and_discrete_ones_do_not():
    x, h = torch.randn(2, 8), torch.randn(2, 19) * 0.1
    for name in CELLS:
        cell = make_cell(name, 8, 19, outputs=2)
        h0 = h[:, : cell.state_size] if cell.state_size <= 19 else torch.cat([h, h], 1)
        a, b = cell(x, h0, 0.1)[1], cell(x, h0, 1.0)[1]
        assert cell.continuous_time == (not torch.allclose(a, b)), name


def _copy_cfc(ref, ours, prefix_map):
    src = dict(ref.named_parameters())
    with torch.no_grad():
        for name, p in ours.named_parameters():
            key = name
            for a, b in prefix_map:
                key = key.replace(a, b)
            p.copy_(src[key])


@pytest.mark.parametrize("mode", ["default", "no_gate", "pure"])
def test_dense_cfc_matches_ncps(mode):
    ref = RefCfCCell(8, 16, mode=mode, backbone_units=32, backbone_layers=1)
    ours = CfCCell(8, 16, mode=mode, backbone_units=32, backbone_layers=1)
    _copy_cfc(ref, ours, [("layers.0.", "")])
    x, h = torch.randn(4, 8), torch.randn(4, 16)
    y_ref, h_ref = ref(x, h, 0.7)
    y, hn = ours(x, h, 0.7)
    torch.testing.assert_close(y, y_ref, atol=1e-6, rtol=0)
    torch.testing.assert_close(hn, h_ref, atol=1e-6, rtol=0)


@pytest.mark.parametrize("mode", ["default", "no_gate", "pure"])
def test_wired_cfc_matches_ncps(mode):
    ref = RefWiredCfCCell(8, RefAutoNCP(19, 2), mode=mode)
    ours = CfCCell(8, AutoNCP(19, 2), mode=mode)
    _copy_cfc(ref, ours, [("layers.", "layer_")])
    x, h = torch.randn(4, 8), torch.randn(4, 19)
    y_ref, h_ref = ref(x, h, 0.7)
    y, hn = ours(x, h, 0.7)
    torch.testing.assert_close(y, y_ref, atol=1e-6, rtol=0)
    torch.testing.assert_close(hn, h_ref, atol=1e-6, rtol=0)


def test_factory_errors_name_the_choices():
    with pytest.raises(ValueError, match="unknown cell 'transformer'; known cells: ltc, cfc"):
        make_cell("transformer", 8)
    with pytest.raises(ValueError, match="needs `outputs`"):
        make_cell("ltc", 8, 19)
    with pytest.raises(ValueError, match="mode must be one of"):
        CfCCell(8, 4, mode="fast")


def test_sequence_rejects_bad_timespans():
    seq = Sequence(make_cell("gru", 3, 4))
    with pytest.raises(ValueError, match="timespans must be positive"):
        seq(torch.randn(2, 5, 3), timespans=torch.zeros(2, 5))
    with pytest.raises(ValueError, match=r"timespans must have shape \(2, 5\)"):
        seq(torch.randn(2, 5, 3), timespans=torch.ones(5))
    with pytest.raises(ValueError, match=r"x must have shape \(B, T, 3\)"):
        seq(torch.randn(2, 3))
