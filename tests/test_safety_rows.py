"""HOCBF rows derived by autograd against hand-derived ones; constraint validation."""

import pytest
import torch

from safeliquid.safety import (
    Barrier,
    ConstraintSet,
    DoubleIntegrator,
    SingleIntegrator,
    Unicycle,
    cylinder_obstacle,
    half_space,
    position,
    sphere_obstacle,
    state_box,
)

F64 = torch.float64


def states(n, batch=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, n, generator=g, dtype=F64) * 2


def test_double_integrator_obstacle_row_matches_hand_derivation():
    model = DoubleIntegrator(2, mass=2.0)
    c, R = torch.tensor([0.5, -1.0], dtype=F64), 0.7
    x = states(4)
    cs = ConstraintSet(model, sphere_obstacle("disc", position([0, 1]), c, R), x)
    assert cs.barriers[0].relative_degree == 2
    p1, p2 = 1.5, 3.0
    G, b, h = cs.rows(x, torch.tensor([[p1, p2]], dtype=F64).expand(64, 2))
    p, v = x[:, :2], x[:, 2:]
    d = p - c
    hh = d.square().sum(1) - R * R
    # h'' = 2|v|^2 + 2 d.u/m ;  psi_2 = h'' + (p1+p2) h' + p1 p2 h >= 0
    G_hand = -(2 * d / model.mass)
    b_hand = 2 * v.square().sum(1) + (p1 + p2) * 2 * (d * v).sum(1) + p1 * p2 * hh
    torch.testing.assert_close(G[:, 0], G_hand)
    torch.testing.assert_close(b[:, 0], b_hand)
    torch.testing.assert_close(h[:, 0], hh)


def test_unicycle_obstacle_row_matches_hand_derivation():
    model = Unicycle()
    c, R = torch.tensor([1.0, 2.0], dtype=F64), 0.5
    x = states(4, seed=1)
    cs = ConstraintSet(model, cylinder_obstacle("pole", position([0, 1]), c, R), x)
    assert cs.barriers[0].relative_degree == 2
    G, b, _ = cs.rows(x, torch.tensor([[2.0, 0.5]], dtype=F64).expand(64, 2))
    dx, dy, th, v = x[:, 0] - c[0], x[:, 1] - c[1], x[:, 2], x[:, 3]
    h = dx**2 + dy**2 - R * R
    lf_h = 2 * v * (dx * torch.cos(th) + dy * torch.sin(th))
    lf2_h = 2 * v**2
    lglf_h = torch.stack(
        [2 * (dx * torch.cos(th) + dy * torch.sin(th)), 2 * v * (-dx * torch.sin(th) + dy * torch.cos(th))], 1
    )
    torch.testing.assert_close(G[:, 0], -lglf_h)
    torch.testing.assert_close(b[:, 0], lf2_h + 2.5 * lf_h + 1.0 * h)


def test_relative_degrees_one_two_and_three_are_found():
    x = states(2)
    assert ConstraintSet(SingleIntegrator(2), [half_space("wall", [1.0, 0.0], 3.0)], x).barriers[0].relative_degree == 1
    x4 = states(4)
    cs = ConstraintSet(DoubleIntegrator(2), state_box("rail", 0, -1.0, 1.0) + state_box("speed", 2, high=2.0), x4)
    assert [b.relative_degree for b in cs.barriers] == [2, 2, 1]
    assert cs.gain_count == 5

    class Triple(DoubleIntegrator):  # a jerk-controlled integrator: position has relative degree 3
        def __init__(self):
            super().__init__(1)
            self.state_dim, self.control_dim = 3, 1

        def f(self, x):
            return torch.stack([x[:, 1], x[:, 2], torch.zeros_like(x[:, 0])], 1)

        def g(self, x):
            g = x.new_zeros(x.shape[0], 3, 1)
            g[:, 2, 0] = 1.0
            return g

    cs3 = ConstraintSet(Triple(), state_box("pos", 0, high=1.0), states(3))
    assert cs3.barriers[0].relative_degree == 3
    G, b, _ = cs3.rows(states(3), torch.ones(64, 3, dtype=F64))
    x = states(3)
    # psi_3 = -x''' - 3 x'' - 3 x' + (1 - x) with unit gains: G u <= b with G = +1 (u = x''').
    torch.testing.assert_close(G[:, 0, 0], torch.ones(64, dtype=F64))
    torch.testing.assert_close(b[:, 0], -3 * x[:, 2] - 3 * x[:, 1] + (1 - x[:, 0]))


def test_learned_gains_receive_gradients():
    model = DoubleIntegrator(2)
    x = states(4)
    cs = ConstraintSet(model, sphere_obstacle("disc", position([0, 1]), [0.0, 0.0], 0.5), x)
    gains = torch.rand(64, 2, dtype=F64, requires_grad=True)
    _, b, _ = cs.rows(x, gains)
    b.sum().backward()
    assert gains.grad is not None and gains.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "barriers,match",
    [
        ([Barrier("const", lambda x: torch.ones(x.shape[0], dtype=x.dtype))], "'const'.*zero input gain"),
        ([Barrier("shape", lambda x: x[:, :2])], r"'shape': h\(x\) must return shape \(64,\)"),
        ([Barrier("nan", lambda x: x[:, 0] * float("nan"))], "'nan': h\\(x\\) returned NaN"),
        ([Barrier("deg", lambda x: x[:, 0], relative_degree=1)], "'deg': declared relative degree 1"),
        ([Barrier("g", lambda x: x[:, 0], gains=[1.0])], "'g': needs 2 gains"),
        (
            [Barrier("a", lambda x: x[:, 0]), Barrier("a", lambda x: x[:, 1])],
            "constraint names must be unique",
        ),
    ],
)
def test_bad_constraints_fail_at_construction_naming_the_constraint(barriers, match):
    with pytest.raises(ValueError, match=match):
        ConstraintSet(DoubleIntegrator(2), barriers, states(4))


def test_bad_input_bounds_are_named():
    with pytest.raises(ValueError, match="u_min must not exceed u_max"):
        ConstraintSet(DoubleIntegrator(2), state_box("rail", 0, -1.0, 1.0), states(4), u_min=[1, 1], u_max=[0, 0])
