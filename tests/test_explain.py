"""safeliquid explain: the replay is the run, the saliency is the gradient, the trees and their concentration."""

import json

import numpy as np
import pytest
import torch

from safeliquid import cli
from safeliquid.policies import LiquidBarrierPolicy, load_policy, shipped
from safeliquid.train.explain import concentration, explain, neuron_trees, record, replay, saliency

CART = "safeliquid/CartPoleRail-v0"


def test_concentration_is_one_for_one_variable_and_zero_for_all_alike():
    assert concentration(np.array([0.0, 1.0, 0.0, 0.0])) == pytest.approx(1.0)
    assert concentration(np.full(4, 0.25)) == pytest.approx(0.0)
    assert 0.0 < concentration(np.array([0.7, 0.3, 0.0, 0.0])) < 1.0
    assert concentration(np.zeros(4)) == 0.0  # a tree without splits reads nothing


def test_the_replay_is_the_run_and_the_saliency_is_the_gradient(one_thread):
    policy = load_policy(shipped(CART))
    (trace,) = record(policy, CART, seed=7, episodes=1)
    obs = np.asarray(trace.obs, dtype=np.float32)
    neurons, before = replay(policy, obs)
    assert neurons.shape == (len(obs), policy.cell.state_size)
    with torch.no_grad():  # where the layer left the command alone, the run executed the replay's command
        raw, h_last = policy.raw_sequence(torch.as_tensor(obs)[None])
        u_ref = policy.outputs(raw[0])[0].numpy()
    free = np.asarray(trace.intervention) < 1e-9
    assert free.sum() > 100
    np.testing.assert_allclose(u_ref[free], np.asarray(trace.action)[free], atol=1e-3)
    np.testing.assert_allclose(neurons[-1], h_last[0].numpy(), atol=1e-4)
    sal = saliency(policy, obs[:40], before[:40])
    t, k, eps = 25, 4, 1e-3  # theta_dot's entry at step 25, by central differences
    with torch.no_grad():

        def command(delta):
            x = torch.as_tensor(obs[t : t + 1]).clone()
            x[0, k] += delta
            return policy.raw_step(x, before[t : t + 1])[0][0, : policy.config.n_command]

        fd = (command(eps) - command(-eps)) / (2 * eps)
    assert sal[t, k] == pytest.approx(float(fd.norm() * policy.obs_std[k]), rel=1e-2)


def test_trees_fit_a_neuron_that_reads_one_state_variable():
    rng = np.random.default_rng(0)
    states = rng.uniform(-1, 1, (600, 4))
    neurons = np.stack([np.where(states[:, 2] > 0.1, 1.0, -1.0), rng.normal(size=600)], 1)
    held_out = np.arange(600) >= 400
    exact, noise = neuron_trees(states, neurons, 2, ["a", "b", "c", "d"], held_out)
    assert exact["r2"] == pytest.approx(1.0) and exact["concentration"] == pytest.approx(1.0)
    assert max(exact["importances"], key=exact["importances"].get) == "c" and "c <=" in exact["text"]
    assert noise["r2"] < 0.2  # pure noise is not explained on the held-out steps


@pytest.mark.parametrize("cell", ["ltc", "mlp"])
def test_explain_writes_its_views_for_any_cell(tmp_path, cell, one_thread):
    if cell == "ltc":
        policy = load_policy(shipped(CART))
    else:  # an untrained stateless cell: its outputs are the neurons
        config = load_policy(shipped(CART)).config
        policy = LiquidBarrierPolicy(type(config)(**{**config.to_dict(), "cell": "mlp", "units": 12}))
    r = explain(policy, CART, tmp_path, seed=3, episodes=2, depth=2)
    assert r["neurons"] == (19 if cell == "ltc" else policy.cell.output_size) == len(r["trees"])
    assert all((tmp_path / f).stat().st_size > 0 for f in ("neurons.png", "saliency.png", "trees.md"))
    assert json.loads((tmp_path / "explain.json").read_text())["steps"] == 1000


def test_explain_from_the_command_line(tmp_path, capsys):
    out = tmp_path / "x"
    assert cli.main(["explain", "--env", CART, "--episodes", "1", "--out", str(out)]) == 0
    assert "decision trees" in capsys.readouterr().out and (out / "trees.md").exists()
    assert cli.main(["explain", "--env", CART, "--depth", "0", "--out", str(out)]) == 2
