"""Views into a policy's neurons (``safeliquid explain``): activity traces along an episode, the saliency of the
command over the observation (for a range scan: which rays the policy attends to), and per-neuron decision
trees from the world state to the neuron's activity.

- **Neurons** are the entries of the cell's recurrent state (an LTC's potentials; an LSTM's ``h`` and ``c``),
  replayed through :meth:`~safeliquid.policies.LiquidBarrierPolicy.raw_step` on the observations the policy saw
  (the network is deterministic, so the replay is the run to rounding); a cell without a state (``mlp``) shows
  its outputs.
- **Saliency** of step ``t``: ``|d command_t / d obs_t|`` at the recorded state ``h_{t-1}`` (the norm over the
  command's entries), times each observation entry's normalisation std, so entries in different units compare.
- **Decision trees** (scikit-learn, after Wang et al. 2022): per neuron a depth-limited regression tree from the
  environment's state to the neuron's activity, fitted on all episodes but the last and scored (R^2) on the last
  (with one episode: on a seeded random 30% of its steps). Its **decision concentration** is
  ``1 - H(p) / log(n)`` of the tree's feature importances ``p`` over the ``n`` state variables: 1 when every
  split reads one variable, 0 when the splits spread evenly over all (our reading of the paper's concentration
  of decisions, not its exact definition).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from safeliquid.checkpoint import atomic_write_text
from safeliquid.envs import make_env
from safeliquid.train.rollout import PolicyController, Trace, run_episode


def record(policy: Any, env_id: str, seed: int, episodes: int) -> list[Trace]:
    """``episodes`` traced episodes of ``policy`` on seeds ``seed ...``."""
    env = make_env(env_id)
    try:
        traces = [run_episode(env, PolicyController(policy), seed + k, trace=True)[1] for k in range(episodes)]
    finally:
        env.close()
    return [t for t in traces if t is not None]


@torch.no_grad()
def replay(policy: Any, obs: np.ndarray) -> tuple[np.ndarray, torch.Tensor | None]:
    """The neurons' activity after each step, ``(T, N)``, from the observations ``obs (T, obs_dim)``: the cell's
    state, or for a cell without one (``mlp``) its output; and the state before each step ``(T, H)`` (None for a
    stateless cell)."""
    cell = policy.cell
    if cell.state_size == 0:
        seen: list[torch.Tensor] = []
        hook = cell.register_forward_hook(lambda _m, _i, out: seen.append(out[0][0].clone()))
        try:
            for o in torch.as_tensor(obs, dtype=torch.float32):
                policy.raw_step(o[None], None)
        finally:
            hook.remove()
        return torch.stack(seen).numpy(), None
    h, after = cell.initial_state(1), []
    for o in torch.as_tensor(obs, dtype=torch.float32):
        _, h = policy.raw_step(o[None], h)
        after.append(h[0].clone())
    states = torch.stack(after)
    return states.numpy(), torch.cat([cell.initial_state(1), states[:-1]])


def saliency(policy: Any, obs: np.ndarray, before: torch.Tensor | None) -> np.ndarray:
    """``(T, obs_dim)``: ``|d command_t / d obs_t|`` at the state ``before (T, H)`` each step (see the module
    docstring), times the observation normalisation's std."""
    x = torch.as_tensor(obs, dtype=torch.float32).requires_grad_(True)
    raw, _ = policy.raw_step(x, before)
    command = raw[:, : policy.config.n_command]
    grads = []
    for j in range(command.shape[1]):  # rows are independent: the gradient of the sum is each row's
        (g,) = torch.autograd.grad(command[:, j].sum(), x, retain_graph=True)
        grads.append(g)
    norm = torch.stack(grads).pow(2).sum(0).sqrt()
    return (norm * policy.obs_std).detach().numpy()


def concentration(importances: np.ndarray) -> float:
    """``1 - H(p) / log(n)`` of the importances ``p (n,)`` (0 for a tree without splits, which reads nothing)."""
    p = np.asarray(importances, dtype=float)
    if p.sum() <= 0 or p.size < 2:
        return 0.0
    p = p / p.sum()
    entropy = -sum(q * math.log(q) for q in p if q > 0)
    return 1.0 - entropy / math.log(p.size)


def neuron_trees(
    states: np.ndarray, neurons: np.ndarray, depth: int, names: list[str], held_out: np.ndarray
) -> list[dict[str, Any]]:
    """Per neuron: a tree of ``depth`` fitted from ``states (T, n)`` to ``neurons[:, i]`` on the steps not
    ``held_out (T,)`` (bool); its R^2 on the held-out ones, its concentration, importances and text."""
    try:
        from sklearn.tree import DecisionTreeRegressor, export_text
    except ImportError:
        raise ValueError("the decision trees need scikit-learn: pip install 'safeliquid[study]'") from None
    fit = ~held_out
    out = []
    for i in range(neurons.shape[1]):
        y = neurons[:, i]
        tree = DecisionTreeRegressor(max_depth=depth, random_state=0).fit(states[fit], y[fit])
        rest = y[held_out]
        spread = float(((rest - rest.mean()) ** 2).sum())
        r2 = 1.0 - float(((tree.predict(states[held_out]) - rest) ** 2).sum()) / spread if spread > 0 else math.nan
        out.append({
            "neuron": i, "r2": r2, "concentration": concentration(tree.feature_importances_),
            "importances": dict(zip(names, map(float, tree.feature_importances_), strict=True)),
            "text": export_text(tree, feature_names=names, decimals=3),
        })  # fmt: skip
    return out


def _plots(out: Path, neurons: np.ndarray, action: np.ndarray, sal: np.ndarray, policy: Any, dt: float) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = np.arange(len(neurons)) * dt
    fig, (ax_a, ax_n) = plt.subplots(2, 1, figsize=(8, 6), sharex=True, gridspec_kw={"height_ratios": [1, 3]})
    ax_a.plot(t, action)
    ax_a.set_ylabel("action")
    z = (neurons - neurons.mean(0)) / np.maximum(neurons.std(0), 1e-9)
    ax_n.imshow(z.T, aspect="auto", cmap="coolwarm", vmin=-2.5, vmax=2.5, extent=(t[0], t[-1] + dt, len(z.T), 0))
    ax_n.set_ylabel("neuron (activity, z-scored)")
    ax_n.set_xlabel("time (s)")
    fig.tight_layout()
    fig.savefig(out / "neurons.png", dpi=110)
    plt.close(fig)
    mean_sal = sal.mean(0)
    scan = policy.config.scan
    fig = plt.figure(figsize=(9, 3.6))
    ax = fig.add_subplot(1, 2 if scan else 1, 1)
    ax.bar(np.arange(len(mean_sal)), mean_sal)
    ax.set_xlabel("observation entry")
    ax.set_ylabel("mean |d command / d obs| x std")
    if scan:
        start, n = scan
        ax.axvspan(start - 0.5, start + n - 0.5, color="0.9", zorder=0, label="range scan")
        ax.legend(fontsize=8)
        polar = fig.add_subplot(1, 2, 2, projection="polar")
        angles = np.linspace(0.0, 2 * np.pi, n, endpoint=False)
        polar.bar(angles, mean_sal[start : start + n], width=2 * np.pi / n * 0.8)
        polar.set_yticklabels([])
        polar.set_title("saliency per ray (0 = +x)", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "saliency.png", dpi=110)
    plt.close(fig)
    return ["neurons.png", "saliency.png"]


def explain(policy: Any, env_id: str, out: Path, seed: int, episodes: int, depth: int = 3) -> dict[str, Any]:
    """Write ``neurons.png``, ``saliency.png``, ``trees.md`` and ``explain.json`` for ``policy`` into ``out``
    from ``episodes`` episodes on seeds ``seed ...``; returns the JSON's content."""
    out.mkdir(parents=True, exist_ok=True)
    traces = record(policy, env_id, seed, episodes)
    obs = [np.asarray(tr.obs, dtype=np.float32) for tr in traces]
    replays = [replay(policy, o) for o in obs]
    neurons = [n for n, _ in replays]
    sal = np.concatenate([saliency(policy, o, before) for o, (_, before) in zip(obs, replays, strict=True)])
    states = np.concatenate([np.asarray(tr.state[:-1]) for tr in traces])  # the state each step acted on
    names = _state_names(env_id, states.shape[1])
    if episodes > 1:  # the last episode is held out: the trees must explain an episode they did not see
        held_out = np.arange(len(states)) >= len(states) - len(obs[-1])
    else:  # one episode: a seeded random 30% of its steps
        held_out = np.random.default_rng(0).random(len(states)) < 0.3
    trees = neuron_trees(states, np.concatenate(neurons), depth, names, held_out)
    plots = _plots(out, neurons[0], np.asarray(traces[0].action), sal, policy, policy.config.dt)
    result = {
        "env_id": env_id, "cell": policy.config.cell, "episodes": episodes, "seed": seed, "steps": len(states),
        "neurons": int(neurons[0].shape[1]), "saliency_mean": sal.mean(0).tolist(),
        "trees": [{k: v for k, v in t.items() if k != "text"} for t in trees],
        "median_r2": float(np.nanmedian([t["r2"] for t in trees])),
        "mean_concentration": float(np.mean([t["concentration"] for t in trees])), "plots": plots,
    }  # fmt: skip
    best = sorted((t for t in trees if np.isfinite(t["r2"])), key=lambda t: -t["r2"])[:3]
    lines = [f"# Decision trees of {policy.config.cell} on {env_id}", "",
             f"{len(trees)} neurons, depth {depth}, {len(states)} steps of {episodes} episodes (seeds {seed}...); "
             f"held-out R^2 median {result['median_r2']:.2f}, decision concentration mean "
             f"{result['mean_concentration']:.2f}.", "",
             "| neuron | R^2 | concentration | most read |", "|---|---|---|---|"]  # fmt: skip
    for t in trees:
        top = max(t["importances"], key=t["importances"].get)
        lines.append(f"| {t['neuron']} | {t['r2']:.2f} | {t['concentration']:.2f} | {top} |")
    for t in best:
        lines += ["", f"## neuron {t['neuron']} (R^2 {t['r2']:.2f})", "", "```", t["text"].rstrip(), "```"]
    atomic_write_text(out / "trees.md", "\n".join(lines) + "\n")
    atomic_write_text(out / "explain.json", json.dumps(result, indent=1))
    return result


def _state_names(env_id: str, n: int) -> list[str]:
    known = {"safeliquid/CartPoleRail-v0": ["x", "theta", "x_dot", "theta_dot"],
             "safeliquid/Navigate-v0": ["x", "y", "vx", "vy"]}  # fmt: skip
    names = known.get(env_id, [])
    return names if len(names) == n else [f"s{i}" for i in range(n)]
