"""Training end to end (tiny), gradients through the QP, resume, checkpoints, metrics and the CLI."""

import argparse
import dataclasses
import itertools
import json
import math
import os
from dataclasses import replace
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

import safeliquid.envs  # noqa: F401 - registers the environments
from safeliquid import cli, load_policy, options
from safeliquid.checkpoint import CheckpointError
from safeliquid.cli_options import HELD_OUT_SEED
from safeliquid.metrics import EpisodeRecorder, aggregate, proportion_ci
from safeliquid.policies import SHIPPED_DIR, LiquidBarrierPolicy, save_policy, scene_rows, shipped
from safeliquid.safety.models import joint_velocity
from safeliquid.train import data as data_mod
from safeliquid.train import imitation, run_log
from safeliquid.train.data import collect, make_batch
from safeliquid.train.run_options import policy_config

NAV = "safeliquid/Navigate-v0"
TINY = imitation.TrainConfig(
    demos=4, dagger_rounds=1, dagger_episodes=2, updates=12, batch_episodes=4, eval_every=6, eval_episodes=1,
    workers=0, lr=1e-2,
)  # fmt: skip


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def demos():
    torch.set_num_threads(1)
    return collect(NAV, [0, 1, 2], workers=0)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("run")
    last = imitation.train(replace(TINY, out=str(out)))
    return out, last


def _names(episodes) -> list[str]:
    return [n for e in episodes for n in e.names]


def _policy(demos, safety="barrier", cell="ltc", cell_dt=None, prior=None, skip=False, goal_gain=0.0):
    env = gym.make(NAV)
    tiny = replace(TINY, safety=safety, cell=cell, cell_dt=cell_dt, prior=prior, prior_bound=4.0, prior_gain=3.0,
                   skip=skip, goal_gain=goal_gain)  # fmt: skip
    cfg = policy_config(tiny, env, _names(demos))
    env.close()
    policy = LiquidBarrierPolicy(cfg)
    obs = np.concatenate([e.obs for e in demos])
    policy.set_normalization(obs.mean(0), obs.std(0))
    return policy


def test_demonstrations_carry_the_constraint_layer_inputs(demos):
    e = demos[0]
    assert e.success and e.cost == 0.0  # the expert drove
    T, K = len(e.obs), len(e.names)
    assert e.A.shape == (T, K, 2) and e.L.shape == (T, K, 3) and e.expert.shape == (T, 2)
    assert (e.L[:, :, 0] > 0).all()  # h >= 0 along an expert episode


def test_gradients_reach_the_gains_and_the_ltc_through_the_qp(demos):
    policy = _policy(demos)
    batch = make_batch(demos, policy.config.gain_groups)
    u_ref, mult, _ = policy(batch["obs"])
    B, T, m = u_ref.shape
    # The rows of states approaching an obstacle (the expert's paths keep clear of the braking barriers, so
    # that the untrained policy's commands would not make them active), under the policy's outputs.
    env = gym.make(NAV).unwrapped
    env.reset(seed=5)
    x = torch.tensor(np.array(_approaching_states(env, count=40)))
    rows = scene_rows(env.constraints, x, policy.config.gain_groups)
    env.close()
    n = x.shape[0]
    u_ref, mult = u_ref.reshape(B * T, m)[:n], mult.reshape(B * T, *mult.shape[2:])[:n]
    u, _ = policy.project(u_ref, mult, rows)
    active = (u - u_ref).norm(dim=-1) > 1e-6
    loss = (u - batch["expert"].reshape(B * T, m)[:n]).square().sum(-1).mean()
    mult.retain_grad()
    loss.backward()
    assert mult.grad is not None and float(mult.grad.abs().sum()) > 0, "no gradient reached the class-K gains"
    cell_grads = [p.grad for p in policy.cell.parameters() if p.grad is not None]
    assert cell_grads and sum(float(g.abs().sum()) for g in cell_grads) > 0
    assert bool(active.any()), "the QP was never active, so the gain gradient test would be vacuous"


@pytest.mark.parametrize(
    "cell_dt,prior",
    [(None, None), (3.0, None), (3.0, "accel"), (3.0, "velocity"), (3.0, "task"), (3.0, "skip"), (3.0, "goal")],
    ids=["physical-time", "cell_dt=3", "accel-prior", "velocity-prior", "task-prior", "skip", "goal-residual"],
)
def test_batch_one_fast_path_equals_the_batched_torch_path(demos, cell_dt, prior):
    net_prior = {"skip": None, "goal": "task"}.get(prior, prior)
    policy = _policy(demos, cell_dt=cell_dt, prior=net_prior, skip=prior == "skip", goal_gain=2.0 * (prior == "goal"))
    if policy.skip is not None:  # a nonzero map, so that the test sees it
        torch.nn.init.normal_(policy.skip.weight, std=0.3, generator=torch.Generator().manual_seed(1))
    env = gym.make(NAV).unwrapped
    obs, _ = env.reset(seed=3)
    fast, slow = [], []
    policy.reset()
    for _ in range(15):
        state = env.safety_state()
        fast.append(policy.act(obs, state, env.constraints))
        obs, *_ = env.step(fast[-1])
    env.reset(seed=3)
    policy.reset()
    obs, _ = env.reset(seed=3)
    for _ in range(15):
        state = env.safety_state()
        slow.append(policy.act(obs[None], state[None], env.constraints)[0])  # batched: the torch path
        obs, *_ = env.step(slow[-1])
    np.testing.assert_allclose(np.array(fast), np.array(slow), atol=2e-4)


def test_cell_dt_sets_the_ode_time_per_step_in_training_and_at_run_time(demos):
    slow, fast = _policy(demos, safety="none"), _policy(demos, safety="none", cell_dt=3.0)
    assert slow.config.cell_time == slow.config.dt and fast.config.cell_time == 3.0
    obs = torch.from_numpy(demos[0].obs[:20])
    with torch.no_grad():
        u_seq, u_slow = fast(obs[None])[0][0], slow(obs[None])[0][0]  # the training path: whole sequences
    fast.reset()
    u_run = torch.stack([torch.from_numpy(fast.act(o.numpy())) for o in obs])  # run time, step by step
    torch.testing.assert_close(u_run, u_seq, atol=1e-5, rtol=0)
    assert float((u_slow - u_seq).abs().max()) > 1e-3, "cell_dt did not change the cell's dynamics"
    with pytest.raises(ValueError, match="cell_dt must be > 0"):
        replace(fast.config, cell_dt=-1.0)


@pytest.mark.parametrize("prior", ["accel", "velocity"])
def test_priors_are_inverse_dynamics_and_train_in_acceleration_space(demos, prior):
    policy = _policy(demos, prior=prior)  # prior_bound 4, prior_gain 3
    batch = make_batch(demos, policy.config.gain_groups)
    f, g = batch["dyn"][:2]
    assert f.shape[:2] == batch["obs"].shape[:2] and g.shape[-2:] == (4, 2)
    u_ref, _, _ = policy(batch["obs"], dyn=batch["dyn"])
    accel = f[..., 2:] + (g[..., 2:, :] @ u_ref.detach().double().unsqueeze(-1)).squeeze(-1)  # what u_ref does
    real = batch["step_mask"]
    if prior == "accel":
        cmd = accel
    else:  # a = gain (v - q'): recover the velocity command v, bounded like the acceleration command
        cmd = accel / 3.0 + f[..., :2]
    peak = float(cmd[real].abs().max())
    assert 0.1 < peak <= 4.0 + 1e-5
    loss, _ = imitation.loss_on(policy, batch)
    loss.backward()
    assert torch.isfinite(loss) and sum(float(p.grad.abs().sum()) for p in policy.cell.parameters()) > 0
    with pytest.raises(ValueError, match="needs the model's f and g"):
        policy(batch["obs"])
    with pytest.raises(ValueError, match="fully actuated second-order model"):
        policy_config(replace(TINY, env_id="safeliquid/CartPoleRail-v0", prior=prior, prior_bound=4.0),
                      gym.make("safeliquid/CartPoleRail-v0"), _names(demos))  # fmt: skip
    with pytest.raises(ValueError, match=f"prior_bound is required with prior '{prior}'"):
        replace(TINY, prior=prior)  # the config refuses it before anything is built


def test_joint_velocity_moves_the_task_point_without_null_space_motion():
    gen = torch.Generator().manual_seed(0)
    J = torch.randn(5, 3, 7, generator=gen, dtype=torch.float64)
    v = torch.randn(5, 3, generator=gen, dtype=torch.float64)
    qd = joint_velocity(J, v, damping=1e-9)
    torch.testing.assert_close((J @ qd.unsqueeze(-1)).squeeze(-1), v)  # the task point moves at v
    null = torch.eye(7, dtype=torch.float64) - torch.linalg.pinv(J) @ J
    assert float((null @ qd.unsqueeze(-1)).abs().max()) < 1e-9  # nothing in the null space
    assert torch.isfinite(joint_velocity(torch.zeros_like(J), v)).all()  # a singular (padding) J stays finite


def test_task_prior_tracks_the_resolved_velocity_and_trains(demos):
    policy = _policy(demos, prior="task")  # prior_bound 4, prior_gain 3, task_bound 1
    assert policy.config.n_command == 2  # a 2-D task velocity
    batch = make_batch(demos, policy.config.gain_groups)
    f, g, J = batch["dyn"]
    assert J.shape == (*batch["obs"].shape[:2], 2, 2)  # Navigate's task point is its position: J = I
    u_ref, _, _ = policy(batch["obs"], dyn=batch["dyn"])
    accel = f[..., 2:] + (g[..., 2:, :] @ u_ref.detach().double().unsqueeze(-1)).squeeze(-1)
    v = accel / 3.0 + f[..., :2]  # a = gain (J+ v_task - q') and J+ = (1 + damping)^-1 here
    real = batch["step_mask"]
    assert 0.05 < float(v[real].abs().max()) <= 1.0 + 1e-5
    loss, _ = imitation.loss_on(policy, batch)
    loss.backward()
    assert torch.isfinite(loss) and sum(float(p.grad.abs().sum()) for p in policy.cell.parameters()) > 0
    with pytest.raises(ValueError, match="task Jacobian"):
        policy(batch["obs"], dyn=batch["dyn"][:2])
    env = gym.make(NAV)
    env.reset(seed=0)
    env.unwrapped.model.task_dim = 0  # a fully actuated model without a task space
    with pytest.raises(ValueError, match="needs a model with a task space"):
        policy_config(replace(TINY, prior="task", prior_bound=4.0), env, _names(demos))


def test_goal_gain_adds_a_saturated_p_command_towards_the_goal(demos, tmp_path):
    plain, goal = _policy(demos, prior="task"), _policy(demos, prior="task", goal_gain=2.0)  # same seed and weights
    batch = make_batch(demos, plain.config.gain_groups)
    assert goal.config.goal_obs == 2 and goal.config.goal_speed == 0.6  # Navigate: goal - position at obs[2:4]
    real = batch["step_mask"]
    e = batch["obs"][real][:, 2:4].double()
    d = e.norm(dim=-1, keepdim=True)
    expected = e / d * torch.clamp(2.0 * d, max=0.6)
    assert float(d.min()) < 0.3 < float(d.max())  # both sides of the speed cap
    torch.testing.assert_close(goal.goal_command(batch["obs"])[real], expected)
    with torch.no_grad():
        u_goal, u_plain = goal(batch["obs"], dyn=batch["dyn"])[0], plain(batch["obs"], dyn=batch["dyn"])[0]
    f, g, _ = batch["dyn"]

    def velocity(u):  # the task velocity u_ref tracks: a = gain (J+ v - q'), J+ = (1 + damping)^-1 here
        return (f[..., 2:] + (g[..., 2:, :] @ u.double().unsqueeze(-1)).squeeze(-1)) / 3.0 + f[..., :2]

    residual = (velocity(u_goal) - velocity(u_plain))[real]
    torch.testing.assert_close(residual, expected, atol=5e-3, rtol=1e-2)  # the DLS damping's 1e-3
    loaded = load_policy(save_policy(goal, tmp_path / "goal.pt"))
    assert (loaded.config.goal_gain, loaded.config.goal_obs) == (2.0, 2)
    with pytest.raises(ValueError, match="goal_gain > 0 needs prior='task'"):
        replace(goal.config, prior="velocity")
    with pytest.raises(ValueError, match=r"goal_gain > 0 needs .* goal_obs with 0 <= goal_obs <= obs_dim"):
        replace(goal.config, goal_obs=goal.config.obs_dim - 1)


@pytest.mark.parametrize("env_id,prior", [(NAV, "velocity"), ("safeliquid/CartPoleRail-v0", "task")])
def test_training_with_goal_gain_needs_the_task_prior_and_a_declared_goal(tmp_path, env_id, prior):
    cfg = replace(TINY, env_id=env_id, prior=prior, prior_bound=2.0, goal_gain=2.0, out=str(tmp_path / "run"))
    with pytest.raises(ValueError, match="goal_gain must be 0 \\(off\\) or > 0 with prior 'task' on an environment"):
        imitation.train(cfg)
    assert not (tmp_path / "run" / "data.pt").exists()  # refused before any demonstration


def test_skip_path_starts_at_zero_and_trains(demos, tmp_path):
    plain, skip = _policy(demos, cell_dt=3.0), _policy(demos, cell_dt=3.0, skip=True)
    batch = make_batch(demos, plain.config.gain_groups)
    with torch.no_grad():
        torch.testing.assert_close(skip(batch["obs"])[0], plain(batch["obs"])[0])  # same seed, zero map
    loss, _ = imitation.loss_on(skip, batch)
    loss.backward()
    assert float(skip.skip.weight.grad.abs().sum()) > 0
    path = save_policy(skip, tmp_path / "skip.pt")
    assert load_policy(path).config.skip and load_policy(path).skip is not None


def _approaching_states(env, count=40, seed=0):
    """States just outside an obstacle's barrier, moving at it at up to 1.5 m/s."""
    rng = np.random.default_rng(seed)
    states = []
    for _ in range(count):
        cx, cy, r = env.obstacles[rng.integers(len(env.obstacles))]
        reach = r + env.robot_radius + env.margin
        angle = rng.uniform(0, 2 * np.pi)
        direction = np.array([np.cos(angle), np.sin(angle)])
        pos = np.array([cx, cy]) + (reach + rng.uniform(0.01, 0.3)) * direction
        states.append(np.concatenate([pos, -rng.uniform(0.3, 1.5) * direction]))
    return states


def test_run_time_layer_keeps_the_next_sample_above_the_margin(demos):
    """At run time the policy's barrier layer (learned gains) is the whole layer: wherever it reports no
    fallback, the model's prediction of every barrier at the next sample is >= the constraint set's sample
    margin, on the fast path and the torch path alike (``test_safety_discrete`` shows what happens without
    the sampled-data correction)."""
    policy = _policy(demos)
    env = gym.make(NAV).unwrapped
    obs, _ = env.reset(seed=5)
    cons, dt = env.constraints, env.dt
    assert cons.sample_margin > 0
    lowest_fast, lowest_torch, feasible = np.inf, np.inf, 0
    for state in _approaching_states(env):
        policy.reset()
        u = policy.act(obs, state, cons)
        if policy.last_report["fallback"][0]:
            continue  # outside the safe set, or too fast to stop: the reported backup acts (tested elsewhere)
        feasible += 1
        policy.reset()
        u_torch = policy.act(obs[None], state[None], cons)[0]
        np.testing.assert_allclose(u, u_torch, atol=2e-4)
        for action, name in ((u, "fast"), (u_torch, "torch")):
            h_next = cons.values_numpy(cons.model.step_numpy(state[None], action[None].astype(np.float64), dt))
            if name == "fast":
                lowest_fast = min(lowest_fast, float(h_next.min()))
            else:
                lowest_torch = min(lowest_torch, float(h_next.min()))
    assert feasible >= 10
    assert lowest_fast >= cons.sample_margin - 1e-9 and lowest_torch >= cons.sample_margin - 1e-9


def test_learning_rate_decays_from_lr_to_lr_times_lr_final():
    cfg = replace(TINY, lr=1e-2, lr_final=0.1, updates=100)
    rates = [imitation.learning_rate(cfg, k) for k in range(101)]
    assert rates[0] == pytest.approx(1e-2) and rates[-1] == pytest.approx(1e-3)
    assert all(a >= b for a, b in itertools.pairwise(rates))
    assert all(isinstance(r, float) for r in rates)  # numpy scalars would break weights_only checkpoint loads


def test_loss_weight_is_a_weighted_mean_over_real_steps(demos):
    policy = _policy(demos, safety="none")
    batch = make_batch(demos[:2], policy.config.gain_groups)
    with torch.no_grad():
        u_ref = policy(batch["obs"])[0]
        per_step = ((u_ref - batch["expert"]) / policy.bound).square().sum(-1)
        mask = batch["step_mask"]
        plain, _ = imitation.loss_on(policy, batch)
        assert float(plain) == pytest.approx(float(per_step[mask].mean()), rel=1e-5)
        assert float(imitation.loss_on(policy, batch, weight=torch.full(mask.shape, 3.0))[0]) == pytest.approx(
            float(plain), rel=1e-5
        )
        one = torch.zeros(mask.shape)
        one[1, 5] = 2.0
        assert float(imitation.loss_on(policy, batch, weight=one)[0]) == pytest.approx(float(per_step[1, 5]), rel=1e-5)
        padding = (~mask).float()  # weight only on padding steps: no real step counts
        for bad in (torch.ones(mask.shape[0], 1), -torch.ones(mask.shape), padding):
            with pytest.raises(ValueError, match="loss weight must be"):
                imitation.loss_on(policy, batch, weight=bad)


@pytest.mark.parametrize("prior", ["velocity", "task"])
def test_slow_weight_reads_the_labels_command_and_weights_slow_steps(demos, prior):
    policy = _policy(demos, prior=prior)  # prior_gain 3
    batch = make_batch(demos, policy.config.gain_groups)
    f, g = batch["dyn"][:2]
    qd_star = torch.randn((*f.shape[:-1], 2), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    qd_star[0, :5] = 0.0  # a still expert: the largest weight
    a = 3.0 * (qd_star - f[..., :2])  # what a prior policy commanding qd_star asks for
    batch["expert"] = torch.linalg.solve(g[..., 2:, :], (a - f[..., 2:]).unsqueeze(-1)).squeeze(-1).float()
    cmd = imitation.label_command(batch, prior, 3.0)
    J = batch["dyn"][2] if prior == "task" else torch.eye(2, dtype=torch.float64)
    torch.testing.assert_close(cmd, (J @ qd_star.unsqueeze(-1)).squeeze(-1), atol=1e-5, rtol=1e-5)
    w = imitation.slow_weight(batch, prior, 3.0, 0.1)
    assert w.shape == batch["step_mask"].shape and bool(((w > 0) & (w <= 1)).all())
    torch.testing.assert_close(w[0, :5], torch.ones(5))
    torch.testing.assert_close(w, (0.01 / (cmd.square().sum(-1) + 0.01)).float())
    with pytest.raises(ValueError, match="needs prior 'velocity' or 'task'"):
        imitation.label_command(batch, "accel", 3.0)
    with pytest.raises(ValueError, match="floor must be > 0"):
        imitation.slow_weight(batch, prior, 3.0, 0.0)
    with pytest.raises(ValueError, match="needs demonstrations that carry the model's f"):
        imitation.label_command({**batch, "dyn": batch["dyn"][:1]}, prior, 3.0)


def test_training_with_slow_weight_passes_the_weights(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match=r"slow_weight > 0 needs prior 'velocity' or 'task'"):
        replace(TINY, slow_weight=0.1, out=str(tmp_path / "none"))  # the config refuses it: nothing runs
    assert not (tmp_path / "none" / "data.pt").exists()
    seen = []
    real = imitation.gradient_step

    def spy(policy, optim, batch, lr, weight=None):
        seen.append(weight)
        return real(policy, optim, batch, lr, weight)

    monkeypatch.setattr(imitation, "gradient_step", spy)
    cfg = replace(TINY, prior="velocity", prior_bound=2.0, slow_weight=0.2, dagger_rounds=0, updates=4, eval_every=4,
                  out=str(tmp_path / "run"))  # fmt: skip
    assert np.isfinite(imitation.train(cfg)["loss"])
    assert len(seen) == 4 and all(w is not None and bool(((w > 0) & (w <= 1)).all()) for w in seen)
    assert any(bool((w < 0.99).any()) for w in seen)  # moving steps count less than still ones


def test_gradient_step_refuses_a_non_finite_gradient_before_stepping(demos, monkeypatch):
    policy = _policy(demos, safety="none")
    batch = make_batch(demos[:2], policy.config.gain_groups)
    optim = torch.optim.Adam(policy.parameters(), lr=1e-3)
    before = [p.detach().clone() for p in policy.parameters()]
    stats = imitation.gradient_step(policy, optim, batch, 1e-3)
    after = list(policy.parameters())
    assert np.isfinite(stats["loss"]) and any(not torch.equal(a, p) for a, p in zip(before, after, strict=True))
    real = imitation.loss_on

    def overflowing(*args, **kwargs):  # a loss whose gradient overflows
        loss, stats = real(*args, **kwargs)
        return loss * float("inf"), stats

    monkeypatch.setattr(imitation, "loss_on", overflowing)
    before = [p.detach().clone() for p in policy.parameters()]
    with pytest.raises(FloatingPointError, match=r"non-finite gradient .*lower --lr \(the rate was 0.001\)"):
        imitation.gradient_step(policy, optim, batch, 1e-3)
    after = list(policy.parameters())
    assert all(torch.allclose(a, p, rtol=0, atol=0, equal_nan=True) for a, p in zip(before, after, strict=True))


@pytest.mark.parametrize("cell", ["cfc", "lstm", "gru", "mlp", "ctrnn", "node"])
def test_every_cell_composes_with_the_layer(demos, cell):
    policy = _policy(demos, cell=cell)
    loss, stats = imitation.loss_on(policy, make_batch(demos[:2], policy.config.gain_groups))
    loss.backward()
    assert np.isfinite(stats["loss"]) and "gain_mult_mean" in stats


@pytest.mark.parametrize("safety", ["filter", "none"])
def test_filter_and_none_modes(demos, safety):
    policy = _policy(demos, safety=safety)
    assert policy.n_gain == 0
    env = gym.make(NAV).unwrapped
    obs, _ = env.reset(seed=0)
    policy.reset()
    action = policy.act(obs, env.safety_state(), env.constraints)
    assert action.shape == (2,) and np.all(np.abs(action) <= 5.0)


def test_training_lowers_the_loss_and_its_checkpoint_reloads_to_identical_actions(trained, demos):
    out, _ = trained
    rows = (out / "progress.csv").read_text().splitlines()
    assert len(rows) == 3 and "violating_steps" in rows[0] and "samples_per_s" in rows[0]
    policy = load_policy(out / "best.pt")
    fresh = _policy(demos)
    batch = make_batch(demos, policy.config.gain_groups)
    with torch.no_grad():
        trained_loss, _ = imitation.loss_on(policy, batch)
        initial_loss, _ = imitation.loss_on(fresh, batch)
    assert float(trained_loss) < 0.7 * float(initial_loss)
    again = load_policy(out / "best.pt")
    env = gym.make(NAV).unwrapped
    obs, _ = env.reset(seed=9)
    for p in (policy, again):
        p.reset()
    for _ in range(10):
        a, b = policy.act(obs, env.safety_state(), env.constraints), again.act(obs, env.safety_state(), env.constraints)
        np.testing.assert_array_equal(a, b)
        obs, *_ = env.step(a)
    assert (out / "tb").is_dir() and any((out / "tb").iterdir())


def test_resume_after_a_kill_gives_the_same_run(tmp_path, monkeypatch):
    cfg = replace(TINY, dagger_rounds=0, updates=8, eval_every=4, out=str(tmp_path / "full"))
    imitation.train(cfg)
    full = load_policy(tmp_path / "full" / "last_policy.pt")

    killed = replace(cfg, out=str(tmp_path / "killed"))
    real = imitation.loss_on
    calls = {"n": 0}

    def dying(policy, batch, **kwargs):
        calls["n"] += 1
        if calls["n"] == 7:  # after the checkpoint at update 4
            raise KeyboardInterrupt
        return real(policy, batch, **kwargs)

    monkeypatch.setattr(imitation, "loss_on", dying)
    with pytest.raises(KeyboardInterrupt):
        imitation.train(killed)
    monkeypatch.setattr(imitation, "loss_on", real)
    state = torch.load(tmp_path / "killed" / "last.pt", weights_only=True)
    assert state["update"] == 4
    del state["train_config"]["slow_weight"]  # a run from before the knob existed resumes with its default
    torch.save(state, tmp_path / "killed" / "last.pt")
    imitation.train(killed)  # resumes from update 4
    resumed = load_policy(tmp_path / "killed" / "last_policy.pt")
    for (name, a), (_, b) in zip(full.state_dict().items(), resumed.state_dict().items(), strict=True):
        torch.testing.assert_close(a, b, msg=name)
    rows = (tmp_path / "killed" / "progress.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["4", "8"]
    with pytest.raises(ValueError, match="different config"):
        imitation.train(replace(killed, lr=0.5))


@pytest.mark.parametrize("kill", ["after the demonstrations", "after a DAgger round", "inside a checkpoint save"])
def test_resume_from_any_kill_point_gives_the_same_run(tmp_path, monkeypatch, kill):
    """A run killed where its files disagree (data.pt written, last.pt not yet) resumes to the same weights. The
    round at update 4 falls between the checkpoints at 3 and 6, so a resume from 3 must redo it."""
    cfg = replace(TINY, dagger_rounds=1, updates=8, eval_every=3, out=str(tmp_path / "full"))
    imitation.train(cfg)
    full = load_policy(tmp_path / "full" / "last_policy.pt")

    killed = replace(cfg, out=str(tmp_path / "killed"))
    real_save, real_atomic = imitation.save_episodes, run_log.atomic_save
    saves = {"n": 0}

    def dying_save(episodes, path, meta=None):
        real_save(episodes, path, meta)
        if (kill == "after the demonstrations" and meta["rounds"] == 1) or (
            kill == "after a DAgger round" and meta["rounds"] == 2
        ):
            raise KeyboardInterrupt

    def dying_atomic(obj, path):
        saves["n"] += 1
        if kill == "inside a checkpoint save" and saves["n"] == 2:  # the update-6 checkpoint, mid-write
            Path(path).parent.joinpath(f".{Path(path).name}.dead.tmp").write_bytes(b"half a checkpoint")
            raise KeyboardInterrupt
        return real_atomic(obj, path)

    monkeypatch.setattr(imitation, "save_episodes", dying_save)
    monkeypatch.setattr(run_log, "atomic_save", dying_atomic)
    with pytest.raises(KeyboardInterrupt):
        imitation.train(killed)
    monkeypatch.setattr(imitation, "save_episodes", real_save)
    monkeypatch.setattr(run_log, "atomic_save", real_atomic)
    imitation.train(killed)  # resumes
    resumed = load_policy(tmp_path / "killed" / "last_policy.pt")
    for (name, a), (_, b) in zip(full.state_dict().items(), resumed.state_dict().items(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    assert not list((tmp_path / "killed").glob(".*.tmp")), "a killed save's temporary file was left behind"


def test_checkpoint_errors_name_the_file_and_the_problem(trained, tmp_path):
    out, _ = trained
    umask = os.umask(0)
    os.umask(umask)
    assert (out / "best.pt").stat().st_mode & 0o777 == 0o666 & ~umask  # shareable, as any file the user writes
    good = (out / "best.pt").read_bytes()
    with pytest.raises(CheckpointError, match="does not exist"):
        load_policy(tmp_path / "missing.pt")
    (tmp_path / "cut.pt").write_bytes(good[: len(good) // 2])
    with pytest.raises(CheckpointError, match=r"cut\.pt could not be read .*corrupt, truncated"):
        load_policy(tmp_path / "cut.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match=r"junk\.pt could not be read"):
        load_policy(tmp_path / "junk.pt")
    policy = load_policy(out / "best.pt")
    obj = torch.load(out / "best.pt", weights_only=True)
    obj["version"] = 99
    torch.save(obj, tmp_path / "future.pt")
    with pytest.raises(CheckpointError, match="format version 99; this safeliquid reads version 1"):
        load_policy(tmp_path / "future.pt")
    with torch.no_grad():
        next(policy.parameters()).fill_(float("nan"))
    save_policy(policy, tmp_path / "nan.pt")
    with pytest.raises(CheckpointError, match="contains NaN"):
        load_policy(tmp_path / "nan.pt")
    assert not list(tmp_path.glob(".*.tmp"))  # atomic saves leave no temporaries


def test_metrics_on_hand_built_episodes():
    rec = EpisodeRecorder()
    rec.step(1.0, {"cost": 0.0, "barrier_min_h": 0.5}, intervention=0.0, compute_s=0.001)
    rec.step(2.0, {"cost": 1.0, "barrier_min_h": -0.2, "contact": True}, intervention=2.0, slack=0.1, compute_s=0.003)
    rec.step(0.0, {"cost": 1.0, "barrier_min_h": 0.01, "contact": True})  # touching with every h >= 0: a gap
    rec.step(
        0.5, {"cost": 0.0, "barrier_min_h": 0.1, "is_success": True}, intervention=1.0, solver_failed=True, slack=1e-10
    )  # fmt: skip - the QP's rounding, not a relaxed row
    e = rec.finish()
    assert (e.ep_ret, e.ep_len, e.ep_cost, e.violating_steps, e.unguarded_contacts) == (3.5, 4, 2.0, 2, 1)
    assert e.deepest_violation == pytest.approx(-0.2) and e.min_barrier == pytest.approx(-0.2)
    assert e.mean_intervention == pytest.approx(0.75) and e.max_intervention == 2.0
    assert (e.slack_steps, e.solver_failures, e.success) == (1, 1, True)
    clean = EpisodeRecorder()
    for _ in range(5):
        clean.step(0.0, {"cost": 0.0, "barrier_min_h": 1.0})
    agg = aggregate([e, clean.finish()])
    assert agg["success_rate"] == 0.5 and agg["failure_rate"] == 0.5
    assert agg["cost_rate"] == pytest.approx(2 / 9) and agg["EpCost"] == 1.0 and agg["unguarded_contacts"] == 1
    lo, hi = agg["success_rate_ci"]
    assert 0 < lo < 0.5 < hi < 1
    assert proportion_ci(0, 50)[0] == 0.0 and 0 < proportion_ci(0, 50)[1] < 0.1
    for n in range(1, 200):  # the interval holds the proportion, to the last bit (a plot's error bar needs it)
        assert all(proportion_ci(k, n)[0] <= k / n <= proportion_ci(k, n)[1] for k in range(n + 1))
    lo, hi = agg["cost_rate_ci"]
    assert 0.0 <= lo <= agg["cost_rate"] <= hi <= 1.0  # the interval is about the pooled rate, inside [0, 1]
    with pytest.raises(KeyError, match="info must carry 'cost'"):
        EpisodeRecorder().step(0.0, {})
    assert math.isnan(e.path_length)  # no positions reported
    walk = EpisodeRecorder()
    walk.start({"position": np.array([0.0, 0.0])})
    for xy in ([3.0, 4.0], [3.0, 4.0], [0.0, 0.0]):
        walk.step(0.0, {"cost": 0.0, "barrier_min_h": 1.0, "position": np.array(xy)})
    assert walk.finish().path_length == pytest.approx(10.0)


@pytest.mark.parametrize("cell", ["ltc", "mlp"])
def test_each_samples_elapsed_time_reaches_a_continuous_cell_on_both_run_time_paths(demos, cell):
    """``act(..., dt=)``: the batch-1 fast path and the batched torch path agree under irregular periods; the
    nominal period is the default; an ODE cell's answer depends on the period, a discrete cell's does not."""
    policy = _policy(demos, cell=cell, cell_dt=3.0)
    env = gym.make(NAV, dt_jitter=0.5).unwrapped
    runs = {}
    for name, timed, batched in (("fast", True, False), ("torch", True, True), ("blind", False, False)):
        obs, info = env.reset(seed=3)
        policy.reset()
        actions = []
        for _ in range(15):
            dt = info["dt"] if timed else None
            state = env.safety_state()
            u = policy.act(obs[None], state[None], env.constraints, dt)[0] if batched else policy.act(
                obs, state, env.constraints, dt)  # fmt: skip
            actions.append(u)
            obs, _, _, _, info = env.step(u)
        runs[name] = np.array(actions)
    np.testing.assert_allclose(runs["fast"], runs["torch"], atol=2e-4)
    gap = float(np.abs(runs["fast"] - runs["blind"]).max())
    assert gap > 1e-3 if cell == "ltc" else gap == 0.0, gap
    policy.reset()
    nominal = policy.act(obs, env.safety_state(), env.constraints, env.dt)
    policy.reset()
    np.testing.assert_array_equal(nominal, policy.act(obs, env.safety_state(), env.constraints))
    for bad in (0.0, -0.05, float("nan")):
        with pytest.raises(ValueError, match="dt must be a positive finite number"):
            policy.act(obs, env.safety_state(), env.constraints, bad)
    env.close()


def test_cli_commands_on_tiny_settings(trained, tmp_path, capsys):
    out, _ = trained
    policy = str(out / "best.pt")
    assert cli.main(["collect", "--episodes", "2", "--workers", "2", "--out", str(tmp_path / "d.pt")]) == 0
    episodes, meta = data_mod.load_episodes(str(tmp_path / "d.pt"))
    assert len(episodes) == 2 and meta["env_id"] == NAV
    args = ["--episodes", "2", "--policy", policy]
    assert cli.main(["eval", *args, "--json", str(tmp_path / "e.json"), "--markdown", str(tmp_path / "e.md")]) == 0
    (row,) = json.loads((tmp_path / "e.json").read_text())
    assert row["episodes"] == 2 and [e["seed"] for e in row["per_episode"]] == [HELD_OUT_SEED, HELD_OUT_SEED + 1]
    assert np.mean([e["success"] for e in row["per_episode"]]) == row["success_rate"]
    assert sum(e["violating_steps"] for e in row["per_episode"]) == row["violating_steps"]
    assert cli.main(["eval", "--episodes", "1", "--expert", "--obs-noise", "0.05"]) == 0
    assert cli.main(["rollout", "--policy", policy, "--out", str(tmp_path / "r")]) == 0
    assert (tmp_path / "r" / "rollout.gif").stat().st_size > 0 and (tmp_path / "r" / "rollout.png").exists()
    assert cli.main(["demo", *args, "--out", str(tmp_path / "demo")]) == 0
    table = (tmp_path / "demo" / "metrics.md").read_text()
    assert "LTC + BarrierNet" in table and "barrier layer off" in table
    assert cli.main(["bench", "--policy", policy, "--steps", "40"]) == 0
    train_out = tmp_path / "t"
    assert cli.main(["train", "--demos", "2", "--dagger-rounds", "0", "--updates", "2", "--eval-every", "2",
                     "--eval-episodes", "1", "--workers", "0", "--gain-groups", "obstacle",
                     "--out", str(train_out)]) == 0  # fmt: skip
    assert (train_out / "best.pt").exists() and load_policy(train_out / "best.pt").config.gain_groups == ["obstacle"]
    printed = capsys.readouterr().out
    assert "success rate" in printed and "control step median" in printed


@pytest.mark.parametrize("command", sorted(cli.COMMANDS))
def test_every_declared_option_is_on_the_command_line(command, tmp_path, monkeypatch):
    """The parser is generated from the options class: each field has its flag, and parsing no flags gives the
    class's defaults (nothing dropped or defaulted differently)."""
    monkeypatch.chdir(tmp_path)
    _, classes, _ = cli.COMMANDS[command]
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    flags = {s for action in sub._actions for s in action.option_strings}
    for cls in classes:
        assert {options.flag(f) for f in dataclasses.fields(cls)} <= flags
        algo = [k for k, v in cli.ALGOS.items() if v is cls]
        argv = [command, *(["--algo", algo[0]] if algo else [])]
        assert options.from_args(cls, parser.parse_args(argv)) == cls()


def test_train_refuses_an_option_of_another_algorithm(capsys):
    assert cli.main(["train", "--algo", "ppo", "--demos", "3", "--out", "x"]) == 2
    assert "--demos is not an option of --algo ppo" in capsys.readouterr().err
    args = cli.build_parser().parse_args(["train", "--algo", "ppo", "--lr", "1e-3", "--out", "x"])
    assert options.from_args(cli.PPOConfig, args).lr == 1e-3
    assert options.from_args(cli.PPOConfig, cli.build_parser().parse_args(["train", "--algo", "ppo"])).lr == 3e-4
    assert options.from_args(cli.TrainConfig, cli.build_parser().parse_args(["train"])).lr == 3e-3


def test_none_reads_as_none_where_an_option_allows_it():
    args = cli.build_parser().parse_args(["train", "--prior", "none", "--cell-dt", "none", "--out", "x"])
    cfg = options.from_args(imitation.TrainConfig, args)
    assert cfg.prior is None and cfg.cell_dt is None
    args = cli.build_parser().parse_args(["eval", "--run-safety", "none", "--policy", "none"])
    opts = options.from_args(cli.EvalOptions, args)
    assert opts.run_safety == "none" and opts.policy == "none"  # a safety mode and a file name, not None


def test_cli_bad_input_is_named(trained, capsys):
    out, _ = trained
    assert cli.main(["eval", "--env", "safeliquid/Nope-v0"]) == 2
    assert (
        "--env: unknown environment id 'safeliquid/Nope-v0'; known: safeliquid/Navigate-v0" in capsys.readouterr().err
    )
    with pytest.raises(SystemExit, match=r"trained on safeliquid/Navigate-v0 \(observation \(20,\), action \(2,\)\)"):
        cli.main(["eval", "--env", "safeliquid/CartPoleRail-v0", "--policy", str(out / "best.pt"), "--episodes", "1"])
    assert cli.main(["eval", "--policy", str(out / "nope.pt")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_gain_groups_choose_which_gains_are_learned(demos, tmp_path):
    """``gain_groups``: the network outputs gains for the named groups only; the others keep their defaults."""
    with pytest.raises(
        ValueError, match=r"\['joint'\] are not barrier groups of safeliquid/Navigate-v0; it has \['obstacle'\]"
    ):
        policy_config(replace(TINY, gain_groups=["joint"]), gym.make(NAV), _names(demos))
    with pytest.raises(ValueError, match="are not barrier groups"):  # before any demonstration is collected
        imitation.train(replace(TINY, gain_groups=["joint"], out=str(tmp_path)))
    assert not (tmp_path / "data.pt").exists()
    arm = "safeliquid/ArmReach-v0"
    env = gym.make(arm)
    env.reset(seed=0)
    base = env.unwrapped
    cfg = policy_config(replace(TINY, env_id=arm, gain_groups=["obstacle"]), env, base.constraints.names)
    policy = LiquidBarrierPolicy(cfg)
    assert cfg.gain_groups == ["obstacle"] and policy.n_gain == cfg.max_degree
    # joint 1 near its upper limit and moving at it, so its row binds
    x = torch.as_tensor(base.safety_state()).unsqueeze(0).clone()
    x[0, 0], x[0, 7] = base.q_high[0] - base.joint_margin - 0.02, 1.0
    u_ref = torch.as_tensor(base.action_bound).unsqueeze(0).double()
    sub, full = scene_rows(base.constraints, x, ["obstacle"]), scene_rows(base.constraints, x, ["joint", "obstacle"])
    points = sum(name.startswith("obstacle/") for name in base.constraints.names)
    assert (sub["group"][0, points:] == -1).all() and (sub["group"][0, :points] == 0).all()
    three = torch.full((1, 1, 2), 3.0, dtype=torch.float64)
    u_sub, _ = policy.project(u_ref, three, sub)
    u_full, _ = policy.project(u_ref, torch.cat([torch.ones_like(three), three], 1), full)  # joint x1: defaults
    torch.testing.assert_close(u_sub, u_full)
    u_joint4, _ = policy.project(u_ref, torch.cat([4 * torch.ones_like(three), three], 1), full)
    assert float((u_joint4 - u_full).abs().max()) > 1e-3  # the joint row binds: its gains matter


def test_scene_rows_match_the_layer_rows():
    env = gym.make(NAV).unwrapped
    env.reset(seed=4)
    x = torch.tensor(env.safety_state()).unsqueeze(0)
    rows = scene_rows(env.constraints, x, ["obstacle"])
    G, b, _ = env.constraints.rows(x)  # default gains
    from safeliquid.safety.constraints import rhs

    torch.testing.assert_close(-rows["A"], G)
    torch.testing.assert_close(rhs(rows["L"], rows["degree"], rows["default"]), b)


@pytest.mark.parametrize("path", sorted(SHIPPED_DIR.glob("*.pt")), ids=lambda p: p.name)
def test_shipped_policies_load_and_drive_their_environment(path):
    policy = load_policy(path)
    assert shipped(policy.config.env_id) == path
    env = gym.make(policy.config.env_id)
    obs, _ = env.reset(seed=HELD_OUT_SEED)
    policy.reset()
    base = env.unwrapped
    for _ in range(20):
        u = policy.act(obs, base.safety_state(), base.constraints)
        assert np.all(np.abs(u) <= env.action_space.high + 1e-5) and not policy.last_report["failed"][0]
        obs, _, terminated, truncated, info = env.step(u)
        assert info["cost"] == 0.0 and not (terminated or truncated)
    with pytest.raises(FileNotFoundError, match=path.name):
        shipped("safeliquid/NoSuchEnv-v0")
