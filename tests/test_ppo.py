"""Recurrent PPO through the barrier layer (``safeliquid.train.ppo``): its probability model, its advantage
estimate, exploration without violations, resume, and the command line. Tiny runs only; the training targets
are measured by ``benchmarks/bench_rl.py``."""

from __future__ import annotations

import csv
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from safeliquid import cli, load_policy
from safeliquid.policies import shipped
from safeliquid.train.acting import step_values
from safeliquid.train.ppo import PPOConfig, gae, gaussian_logp, train_ppo

TINY = PPOConfig(total_steps=256, num_envs=4, rollout_steps=32, minibatches=2, epochs=2, eval_every=128,
                 eval_episodes=1, units=8, workers=0)  # fmt: skip


def _rows(out: Path) -> list[dict[str, str]]:
    with open(out / "progress.csv") as fh:
        return list(csv.DictReader(fh))


def test_gaussian_log_probability_is_torchs():
    gen = torch.Generator().manual_seed(0)
    a, mean, log_std = torch.randn(5, 3, generator=gen), torch.randn(5, 3, generator=gen), torch.randn(3, generator=gen)
    ref = torch.distributions.Normal(mean, log_std.exp()).log_prob(a).sum(-1)
    torch.testing.assert_close(gaussian_logp(a, mean, log_std), ref)


def test_gae_matches_a_hand_computation():
    rewards = torch.tensor([[1.0], [0.0], [2.0]])
    values = torch.tensor([[0.5], [0.2], [0.1]])
    dones = torch.tensor([[0.0], [1.0], [0.0]])  # the episode ends after step 1; step 2 starts a new one
    last = torch.tensor([0.3])
    g, lam = 0.9, 0.8
    d2 = 2.0 + g * 0.3 - 0.1
    d1 = 0.0 - 0.2  # terminal: no bootstrap
    d0 = 1.0 + g * 0.2 - 0.5
    expected = torch.tensor([[d0 + g * lam * d1], [d1], [d2]])
    torch.testing.assert_close(gae(rewards, values, dones, last, g, lam), expected)


def test_a_finished_episode_reports_its_final_step_not_its_reset():
    # Same-step autoreset: the done step's info is the new episode's reset; the last step's is in final_info.
    done = np.array([False, True, True])
    info = {"cost": np.array([1.0, 0.0, 0.0]), "_cost": np.ones(3, bool),
            "final_info": {"cost": np.array([0.0, 1.0, 0.0]), "_cost": np.array([False, True, True])}}  # fmt: skip
    np.testing.assert_array_equal(step_values(info, "cost", done), [1.0, 1.0, 0.0])
    np.testing.assert_array_equal(step_values({}, "is_success", done), [0.0, 0.0, 0.0])


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ppo")
    last = train_ppo(replace(TINY, out=str(out)), resume=False)
    return out, last


def test_the_ratio_is_one_on_the_first_epoch_of_fresh_data(tiny_run):
    # The log-probabilities are recomputed by BPTT over the stored sequences, with the recurrent state reset
    # where episodes start: they must equal the rollout's, or the sampled actions' density is not the policy's.
    out, _ = tiny_run
    rows = _rows(out)
    assert len(rows) == 2  # one per iteration
    for row in rows:
        assert float(row["train_first_ratio_dev"]) < 1e-5


def test_a_run_writes_its_log_and_a_loadable_policy(tiny_run):
    out, last = tiny_run
    rows = _rows(out)
    assert [int(r["env_steps"]) for r in rows] == [128, 256] and all(r["success_rate"] != "" for r in rows)
    logged = ("EpRet", "EpCost", "cost_rate", "mean_intervention", "slack_steps", "fallback_steps", "steps_per_s",
              "train_violating_steps")  # fmt: skip
    assert all(f"train_{key}" in rows[0] for key in logged) and "success_rate" in rows[0]
    policy = load_policy(out / "best.pt")
    assert policy.config.units == 8 and policy.config.safety == "barrier"
    assert np.isfinite(policy.obs_std.numpy()).all() and (policy.obs_std.numpy() > 0).all()
    assert (out / "tb").is_dir() and last["env_steps"] == 256


def test_exploration_through_the_layer_has_no_violation_where_the_unfiltered_one_has(tmp_path):
    # Wide exploration noise (std 3 on the raw outputs: near bang-bang forces) for 2,048 steps on Navigate.
    loud = replace(TINY, total_steps=2048, rollout_steps=64, init_std=3.0, eval_every=10**9)
    shielded = train_ppo(replace(loud, out=str(tmp_path / "barrier")), resume=False)
    bare = train_ppo(replace(loud, safety="none", out=str(tmp_path / "none")), resume=False)
    assert shielded["train_train_violating_steps"] == 0
    assert bare["train_train_violating_steps"] > 0
    # Ending each episode at its first violation puts every violating step on an episode's last step: the count
    # must come from that step's info, not from the next episode's reset.
    ended = train_ppo(replace(loud, safety="none", out=str(tmp_path / "ended"),
                              env_kwargs={"terminate_on_violation": True}), resume=False)  # fmt: skip
    assert ended["train_train_violating_steps"] > 0


def test_ppo_lagrangian_raises_its_multiplier_on_violations_and_learns_a_cost_critic(tmp_path):
    # Episodes end at their first violation, so their costs reach the multiplier within the run.
    loud = replace(TINY, total_steps=1024, rollout_steps=64, init_std=3.0, eval_every=10**9, safety="none",
                   cost_limit=0.0, env_kwargs={"terminate_on_violation": True}, out=str(tmp_path))  # fmt: skip
    last = train_ppo(loud, resume=False)
    assert last["train_train_violating_steps"] > 0 and last["train_lagrange"] > 0
    state = torch.load(tmp_path / "last.pt", weights_only=False)
    assert state["cost_critic"] is not None
    resumed = train_ppo(replace(loud, total_steps=1280), resume=False)  # a run without the cost critic in last.pt
    assert resumed["env_steps"] == 1280


def test_the_intervention_penalty_shapes_the_update_not_the_rollout_or_the_logged_return(tmp_path):
    loud = replace(TINY, init_std=3.0, eval_every=10**9)
    runs = [train_ppo(replace(loud, intervention_penalty=k, out=str(tmp_path / str(k))), resume=False) for k in (0, 10)]
    first = [_rows(tmp_path / str(k))[0] for k in (0, 10)]
    assert float(first[0]["train_mean_intervention"]) > 0  # the layer acted on the loud exploration
    assert first[0]["train_mean_intervention"] == first[1]["train_mean_intervention"]  # the same first rollout
    assert first[0]["train_EpRet"] == first[1]["train_EpRet"]
    weights = [load_policy(tmp_path / str(k) / "last_policy.pt").state_dict() for k in (0, 10)]
    assert any(not torch.equal(weights[0][n], weights[1][n]) for n in weights[0])
    assert runs[0]["env_steps"] == runs[1]["env_steps"]


def test_a_killed_run_resumes_from_its_last_checkpoint(tmp_path, killed_at_evaluation):
    from safeliquid.train import ppo

    cfg = replace(TINY, out=str(tmp_path))
    with killed_at_evaluation(ppo, 2):  # after the first evaluation's last.pt, before the second's
        train_ppo(cfg, resume=False)
    assert [int(r["env_steps"]) for r in _rows(tmp_path)] == [128]
    last = train_ppo(cfg, resume=True)
    assert last["env_steps"] == 256 and [int(r["env_steps"]) for r in _rows(tmp_path)] == [128, 256]
    with pytest.raises(ValueError, match=r"different config \(changed: \['lr'\]\)"):
        train_ppo(replace(cfg, lr=1e-3), resume=True)


def test_ppo_from_the_command_line(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "--algo", "ppo", "--total-steps", "128", "--num-envs", "2", "--rollout-steps", "32",
            "--minibatches", "1", "--epochs", "1", "--eval-episodes", "1", "--units", "8", "--safety", "filter",
            "--out", str(out)]  # fmt: skip
    assert cli.main(argv) == 0
    assert load_policy(out / "best.pt").config.safety == "filter"
    assert cli.main(["train", "--algo", "ppo", "--num-envs", "3", "--minibatches", "2", "--out", str(out)]) == 2
    assert "--minibatches must divide num_envs (3)" in capsys.readouterr().err
    assert math.isfinite(float(_rows(out)[-1]["EpRet"]))


def test_fine_tuning_starts_from_the_checkpoint(tmp_path, capsys):
    shipped_nav = str(shipped("safeliquid/Navigate-v0"))
    start = load_policy(shipped_nav)
    out = tmp_path / "ft"
    argv = ["train", "--algo", "ppo", "--init", shipped_nav, "--total-steps", "64", "--num-envs", "2",
            "--rollout-steps", "32", "--minibatches", "1", "--epochs", "1", "--eval-episodes", "1", "--lr", "1e-9",
            "--out", str(out)]  # fmt: skip
    assert cli.main(argv) == 0  # the network options come from the checkpoint
    tuned = load_policy(out / "best.pt")
    assert tuned.config.units == start.config.units and tuned.config.gain_groups == start.config.gain_groups
    same = [torch.allclose(a, b, atol=1e-6) for a, b in zip(start.parameters(), tuned.parameters(), strict=True)]
    assert all(same)  # lr 1e-9: the weights are the checkpoint's
    assert cli.main([*argv[:-1], str(tmp_path / "bad"), "--units", "7"]) == 2
    assert "init's policy differs from this config in {'units': 19}" in capsys.readouterr().err
