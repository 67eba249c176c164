"""The discrete-time guarantee: with actions held for dt, no sample may have h < 0.

1,000 episodes run as one batch: a random disc obstacle each, raw actions
uniformly random or adversarial (driving straight at the obstacle at the input
limit), the plant integrated with finer steps than the filter's prediction.
"""

import pytest
import torch

from safeliquid.safety import Barrier, ConstraintSet, DoubleIntegrator, SafetyFilter, Unicycle

F64 = torch.float64


def rollout(model_name, adversarial, dt, gains, sampled_data, episodes=1000, steps=60, seed=0, margin=None):
    """Returns (lowest barrier value over every sample, steps the QP reported infeasible)."""
    g = torch.Generator().manual_seed(seed)
    if model_name == "double_integrator":
        model, umax = DoubleIntegrator(2), torch.tensor([5.0, 5.0], dtype=F64)
    else:
        model, umax = Unicycle(), torch.tensor([3.0, 2.0], dtype=F64)
    c = torch.rand(episodes, 2, generator=g, dtype=F64) * 4 - 2
    radius = torch.rand(episodes, generator=g, dtype=F64) * 0.7 + 0.3
    angle = torch.rand(episodes, generator=g, dtype=F64) * 6.283
    dist = radius + 0.2 + torch.rand(episodes, generator=g, dtype=F64) * 2.5
    p0 = c + dist.unsqueeze(1) * torch.stack([angle.cos(), angle.sin()], 1)
    rest = torch.zeros(episodes, 2, dtype=F64)
    if model_name == "unicycle":
        rest[:, 0] = torch.rand(episodes, generator=g, dtype=F64) * 6.283  # heading; speed 0
    x = torch.cat([p0, rest], 1)
    obstacle = Barrier("obstacle", lambda s: (s[:, :2] - c).square().sum(1) - radius**2, gains=list(gains))
    cs = ConstraintSet(model, [obstacle], x, u_min=-umax, u_max=umax)
    filt = SafetyFilter(cs, dt=dt if sampled_data else None, margin=margin)
    lowest, infeasible = float("inf"), 0
    for _ in range(steps):
        to_obstacle = c - x[:, :2]
        if not adversarial:
            u_raw = (torch.rand(episodes, 2, generator=g, dtype=F64) * 2 - 1) * umax
        elif model_name == "double_integrator":
            u_raw = umax * to_obstacle / to_obstacle.norm(dim=1, keepdim=True)
        else:  # full throttle, steering at the obstacle
            err = torch.atan2(to_obstacle[:, 1], to_obstacle[:, 0]) - x[:, 2]
            err = torch.atan2(torch.sin(err), torch.cos(err))
            u_raw = torch.stack([umax[0].expand(episodes), (4 * err).clamp(-umax[1], umax[1])], 1)
        u, record = filt.filter(x, u_raw)
        assert bool((u.abs() <= umax + 1e-9).all()), "the filter left the input bounds"
        infeasible += int((record.status != 0).sum())
        for _ in range(4):  # the plant: finer integration than the filter's one-step prediction
            x = model.step(x, u, dt / 4)
        lowest = min(lowest, float(cs.values(x).min()))
    return lowest, infeasible


@pytest.mark.parametrize("model_name", ["double_integrator", "unicycle"])
@pytest.mark.parametrize("adversarial", [False, True], ids=["random", "adversarial"])
def test_no_sample_violates_over_1000_episodes(model_name, adversarial):
    lowest, infeasible = rollout(model_name, adversarial, dt=0.1, gains=(1.0, 1.0), sampled_data=True)
    assert infeasible == 0
    assert lowest >= 0.0, lowest


@pytest.mark.parametrize("model_name", ["double_integrator", "unicycle"])
def test_the_sampled_data_correction_is_what_keeps_samples_safe(model_name):
    """At a slow control rate with aggressive gains the continuous condition is broken between samples."""
    gains = (3.0, 3.0) if model_name == "double_integrator" else (2.0, 2.0)
    continuous, _ = rollout(model_name, True, dt=0.3, gains=gains, sampled_data=False)
    sampled, infeasible = rollout(model_name, True, dt=0.3, gains=gains, sampled_data=True)
    assert continuous < -1e-6  # the problem is real
    assert infeasible == 0
    assert sampled >= 0.0, sampled


@pytest.mark.parametrize("model_name", ["double_integrator", "unicycle"])
def test_a_margin_keeps_every_sample_that_far_above_the_boundary(model_name):
    """``margin``: room for a plant that differs from the model; samples then stay >= margin."""
    margin = 0.02
    lowest, infeasible = rollout(model_name, True, dt=0.1, gains=(1.0, 1.0), sampled_data=True, margin=margin)
    assert infeasible == 0
    assert lowest >= margin - 1e-6, lowest
