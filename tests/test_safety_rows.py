"""HOCBF rows derived by autograd against hand-derived ones; constraint validation."""

import numpy as np
import pytest
import torch

from safeliquid.safety import (
    Barrier,
    ConstraintSet,
    DoubleIntegrator,
    Manipulator,
    SingleIntegrator,
    Unicycle,
    box_obstacle,
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
        ([Barrier("neg", lambda x: x[:, 0], gains=[1.0, -0.5])], "'neg': class-K gains must be positive"),
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


def test_cubic_class_k_row_matches_hand_derivation():
    model = SingleIntegrator(2)
    x = states(2, seed=4)
    cs = ConstraintSet(model, [half_space("wall", [1.0, 0.0], 3.0, class_k="cubic", gains=[0.5])], x)
    G, b, h = cs.rows(x)
    # h = 3 - x0, L_f h = 0, L_g h = [-1, 0]: row -(-1) u0 <= 0.5 h^3
    torch.testing.assert_close(G[:, 0], torch.tensor([[1.0, 0.0]], dtype=F64).expand(64, 2))
    torch.testing.assert_close(b[:, 0], 0.5 * (3.0 - x[:, 0]) ** 3)
    torch.testing.assert_close(h[:, 0], 3.0 - x[:, 0])


def test_box_obstacle_is_positive_outside_negative_inside_and_conservative():
    (box,) = box_obstacle("crate", position([0, 1]), [-1.0, -1.0], [1.0, 1.0], margin=0.1, sharpness=50.0)
    pts = torch.tensor([[0.0, 0.0], [1.05, 0.0], [1.5, 0.0], [3.0, 3.0]], dtype=F64)
    h = box.h(torch.cat([pts, torch.zeros(4, 2, dtype=F64)], 1))
    assert h[0] < 0 and h[1] < 0  # inside the box, inside its margin
    assert h[2] > 0 and h[3] > 0
    true_distance = torch.tensor([0.4, 1.9], dtype=F64)  # per-axis distance outside the grown box
    assert bool((h[2:] <= true_distance + 1e-12).all())  # never over-estimates clearance


def test_several_points_from_a_forward_kinematics_callback():
    """A two-link planar arm (joint positions as state): both the elbow and the tip keep clear of a disc."""

    def fk(x):
        q1, q12 = x[:, 0], x[:, 0] + x[:, 1]
        elbow = torch.stack([torch.cos(q1), torch.sin(q1)], 1)
        tip = elbow + torch.stack([torch.cos(q12), torch.sin(q12)], 1)
        return torch.stack([elbow, tip], 1)  # (B, 2 points, 2)

    barriers = sphere_obstacle("ball", fk, [1.5, 0.5], 0.3, margin=0.05, count=2)
    cs = ConstraintSet(SingleIntegrator(2), barriers, states(2))
    assert cs.names == ["ball[0]", "ball[1]"] and [b.relative_degree for b in cs.barriers] == [1, 1]
    x = states(2, seed=5)
    G, _, h = cs.rows(x)
    tip = fk(x)[:, 1]
    d = tip - torch.tensor([1.5, 0.5], dtype=F64)
    torch.testing.assert_close(h[:, 1], d.square().sum(1) - 0.35**2)
    # Tip Jacobian of the two-link arm; the row is G = -2 d' J (single integrator in joint space).
    q1, q12 = x[:, 0], x[:, 0] + x[:, 1]
    J = torch.stack(
        [
            torch.stack([-torch.sin(q1) - torch.sin(q12), -torch.sin(q12)], 1),
            torch.stack([torch.cos(q1) + torch.cos(q12), torch.cos(q12)], 1),
        ],
        1,
    )
    torch.testing.assert_close(G[:, 1], -2 * (d.unsqueeze(1) @ J).squeeze(1))


def test_manipulator_model_from_mass_matrix_and_bias():
    """A pendulum (m = 2, l = 0.5): M = m l^2, bias = m g l sin q, so q'' = (tau - m g l sin q) / (m l^2)."""
    m, l, g0 = 2.0, 0.5, 9.81
    model = Manipulator(
        1, lambda q: torch.full((q.shape[0], 1, 1), m * l * l, dtype=q.dtype), lambda q, qd: m * g0 * l * torch.sin(q)
    )
    x = states(2, seed=6)
    tau = torch.randn(64, 1, dtype=F64)
    qdd = model.xdot(x, tau)[:, 1]
    torch.testing.assert_close(qdd, (tau[:, 0] - m * g0 * l * torch.sin(x[:, 0])) / (m * l * l))
    cs = ConstraintSet(model, state_box("joint", 0, -1.0, 1.0), x)
    assert [b.relative_degree for b in cs.barriers] == [2, 2]


def test_closed_form_terms_are_checked_against_autograd_and_used():
    """``fast_terms`` is checked on the sample states at construction (a wrong one is named), then serves
    the numpy control-loop calls."""
    import numpy as np

    model, c, R = DoubleIntegrator(2), np.array([0.5, -1.0]), 0.7
    x = states(4)
    barriers = sphere_obstacle("disc", position([0, 1]), c, R)

    def terms(x, wrong=0.0):  # h = |d|^2 - R^2, L_f h = 2 d.v, L_f^2 h = 2 |v|^2, L_g L_f h = 2 d / m
        xp = np if isinstance(x, np.ndarray) else torch
        d, v = x[:, :2] - (c if xp is np else torch.as_tensor(c)), x[:, 2:]
        L = xp.stack([(d * d).sum(1) - R * R, 2 * (d * v).sum(1), 2 * (v * v).sum(1) + wrong], -1)
        return (2 * d)[:, None, :], L[:, None, :]

    with pytest.raises(ValueError, match="'disc': fast_terms disagrees with autograd on L"):
        ConstraintSet(model, barriers, x, fast_terms=lambda x: terms(x, wrong=1e-3))
    calls = []
    cs = ConstraintSet(model, barriers, x, fast_terms=lambda x: calls.append(1) or terms(x))
    calls.clear()
    xn = x.numpy()
    np.testing.assert_allclose(cs.values_numpy(xn), cs.values(x).numpy(), atol=1e-12)
    A, L = cs.terms_numpy(xn)
    assert isinstance(A, np.ndarray) and len(calls) == 2  # the numpy closed form served both calls
    np.testing.assert_allclose(L, terms(xn)[1])


def test_braking_terms_compiled_numpy_path_equals_the_torch_path():
    """The control loop's compiled braking terms and values against the torch formulas, at random states
    (per-axis masses, states at rest and inside the segment's clamp at both ends included)."""
    from safeliquid.safety.braking import braking_terms, braking_values

    rng = np.random.default_rng(0)
    x = rng.normal(0, 2, (200, 4))
    x[:10, 2:] = 0.0  # at rest
    centers, reach = rng.normal(0, 2, (5, 2)), rng.uniform(0.2, 0.6, 5)
    mass = np.array([1.5, 1.5000001])
    A, L = braking_terms(x, centers, reach, 8.0, 0.05, mass)
    A_t, L_t = braking_terms(torch.from_numpy(x), centers, reach, 8.0, 0.05, mass)
    np.testing.assert_allclose(A, A_t.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(L, L_t.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(braking_values(x, centers, reach, 8.0, 0.05), L[..., 0], rtol=0, atol=0)
