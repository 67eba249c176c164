"""SAC with the actor's gradient through the barrier layer (``safeliquid.train.sac``): the gradient path, the
replay of scenes with different barrier counts, exploration without violations, resume and the command line.
Tiny runs only; the ablation is measured by ``benchmarks/bench_rl.py``."""

from __future__ import annotations

import csv
from dataclasses import replace
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from safeliquid import cli, load_policy
from safeliquid.policies import LiquidBarrierPolicy
from safeliquid.policies.scene import scene_rows
from safeliquid.train.run_options import RunOptions, policy_config
from safeliquid.train.sac import Replay, SACConfig, critic_action, scene_rows_of, squashed_logp, train_sac

TINY = SACConfig(total_steps=600, num_envs=2, learning_starts=256, batch_size=64, utd=0.25, eval_every=300,
                 eval_episodes=1, units=8, workers=0, buffer_size=1000)  # fmt: skip


def _rows(out: Path) -> list[dict[str, str]]:
    with open(out / "progress.csv") as fh:
        return list(csv.DictReader(fh))


def _navigate_policy(env: gym.Env) -> LiquidBarrierPolicy:
    env.reset(seed=3)
    return LiquidBarrierPolicy(policy_config(RunOptions(units=8), env, list(env.unwrapped.constraints.names)))


def _rows_at(policy: LiquidBarrierPolicy, env: gym.Env, x: np.ndarray) -> dict[str, torch.Tensor]:
    groups = list(policy.config.gain_groups)
    return scene_rows(env.unwrapped.constraints, torch.from_numpy(x).unsqueeze(0), groups, policy.config.max_degree)


def test_the_critics_action_differentiates_through_the_qp_into_the_gains():
    env = gym.make("safeliquid/Navigate-v0")
    policy = _navigate_policy(env)
    base, m = env.unwrapped, policy.config.act_dim
    # At the reset state, at rest, a zero command leaves the layer inactive: the gain logits get no gradient.
    a = torch.zeros(1, policy.n_outputs, requires_grad=True)
    critic_action(policy, a, scene_rows_of(policy, [base]), "layer").sum().backward()
    assert a.grad is not None and torch.all(a.grad[0, m:] == 0) and torch.all(a.grad[0, :m] > 0)
    # 0.6 m off an obstacle's edge (full braking takes 0.4 m), moving at it at 2 m/s, full force towards it: the
    # layer acts, and the safe action, inside the box, depends on the gains (they move the row's right-hand side).
    c, r = base.obstacles[0, :2], base.obstacles[0, 2]
    x = np.array([c[0] + r + base.robot_radius + base.margin + 0.6, c[1], -2.0, 0.0])
    a = torch.zeros(1, policy.n_outputs)
    a[0, 0] = -5.0  # tanh -> full force in -x, at the obstacle
    a.requires_grad_(True)
    u = critic_action(policy, a, _rows_at(policy, env, x), "layer")
    assert -0.99 < float(u[0, 0].detach()) < 0.99  # the layer cut the commanded full force, short of braking
    u[0, 0].backward()
    assert a.grad is not None and float(a.grad[0, m:].abs().sum()) > 0
    # The shield ablation scores the squashed raw outputs: no QP on the path.
    torch.testing.assert_close(critic_action(policy, a.detach(), {}, "shield"), torch.tanh(a.detach()))
    env.close()


def test_the_log_probability_is_the_tanh_gaussians():
    gen = torch.Generator().manual_seed(0)
    mean, log_std = torch.randn(6, 3, generator=gen), torch.randn(3, generator=gen) * 0.3
    a = mean + log_std.exp() * torch.randn(6, 3, generator=gen) * 2.0  # some far into saturation
    base = torch.distributions.Normal(mean, log_std.exp())
    tanh = torch.distributions.TransformedDistribution(base, [torch.distributions.transforms.TanhTransform()])
    torch.testing.assert_close(squashed_logp(a, mean, log_std), tanh.log_prob(torch.tanh(a)).sum(-1), atol=1e-3,
                               rtol=1e-4)  # fmt: skip


def test_the_replay_pads_scenes_with_more_barriers():
    replay = Replay(4)

    def batch(k: int, value: float) -> dict[str, torch.Tensor]:
        return {"obs": torch.full((1, 3), value), "rows/A": torch.full((1, k, 2), value),
                "rows/mask": torch.ones(1, k, dtype=torch.bool),
                "rows/group": torch.zeros(1, k, dtype=torch.long)}  # fmt: skip

    replay.add(batch(2, 1.0))
    replay.add(batch(3, 2.0))
    assert replay.data["rows/A"].shape == (4, 3, 2)
    assert replay.data["rows/mask"][0].tolist() == [True, True, False]  # the first scene's third row is padding
    assert replay.data["rows/group"][0].tolist() == [0, 0, -1]
    replay.add(batch(1, 3.0))
    assert replay.data["rows/mask"][2].tolist() == [True, False, False] and replay.size == 3
    state = replay.state()
    again = Replay(4)
    again.load(state)
    assert all(torch.equal(again.data[k][:3], replay.data[k][:3]) for k in replay.data)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("sac")
    return out, train_sac(replace(TINY, out=str(out)), resume=False)


def test_a_run_learns_writes_its_log_and_a_loadable_policy(tiny_run):
    out, last = tiny_run
    rows = _rows(out)
    assert last["env_steps"] >= 600 and int(rows[-1]["train_updates"]) > 50
    assert all(np.isfinite(float(r["train_q_loss"])) for r in rows)
    policy = load_policy(out / "best.pt")
    assert policy.config.units == 8 and policy.config.safety == "barrier"
    assert (policy.obs_std.numpy() != 1.0).any()  # the normalisation was fixed from the warm-up


def test_exploration_through_the_layer_has_no_violation_where_the_unfiltered_one_has(tmp_path):
    # Random raw outputs of std 1 through tanh (forces spread over the whole box) for 1,600 steps.
    loud = replace(TINY, total_steps=1600, learning_starts=1600, eval_every=10**9, num_envs=4)
    shielded = train_sac(replace(loud, out=str(tmp_path / "barrier")), resume=False)
    bare = train_sac(replace(loud, safety="none", out=str(tmp_path / "none")), resume=False)
    assert shielded["train_train_violating_steps"] == 0
    assert bare["train_train_violating_steps"] > 0


def test_a_killed_run_resumes_from_its_last_checkpoint(tmp_path, killed_at_evaluation):
    from safeliquid.train import sac

    cfg = replace(TINY, out=str(tmp_path))
    with killed_at_evaluation(sac, 2):  # after the first evaluation's last.pt, before the second's
        train_sac(cfg, resume=False)
    first = [int(r["env_steps"]) for r in _rows(tmp_path) if r["success_rate"]]
    assert len(first) == 1
    saved = torch.load(tmp_path / "last.pt", weights_only=False)
    assert saved["replay"]["size"] == first[0]  # the replay is in last.pt
    last = train_sac(cfg, resume=True)
    assert last["env_steps"] >= 600
    evals = [int(r["env_steps"]) for r in _rows(tmp_path) if r["success_rate"]]
    assert evals[0] == first[0] and len(evals) == 2


def test_sac_from_the_command_line(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "--algo", "sac", "--total-steps", "300", "--num-envs", "2", "--learning-starts", "128",
            "--batch-size", "32", "--eval-episodes", "1", "--units", "8", "--gradient", "shield",
            "--out", str(out)]  # fmt: skip
    assert cli.main(argv) == 0
    assert load_policy(out / "best.pt").config.units == 8
    assert cli.main(["train", "--algo", "sac", "--learning-starts", "8", "--out", str(out)]) == 2
    assert "--learning-starts must be >= batch_size (256), got 8" in capsys.readouterr().err
    assert cli.main(["train", "--algo", "sac", "--epochs", "2", "--out", str(out)]) == 2
    assert "--epochs" in capsys.readouterr().err
