"""The LTC-BarrierNet policy: control-step latency at batch 1 and training throughput, peers in the same run.

Latency (1 thread, batch 1, policy + barrier layer, on Navigate states): this
library's ``policy.act`` against the naive stack of the same architecture — the
ncps 1.0.1 LTC (same wiring and weights) and qpth's QP on the same rows.
Throughput: training samples per second (forward and backward through the LTC
and the QP at every step, batches of whole episodes) with the native QP and with
qpth as the backend, same model and batches. Writes ``benchmarks/results/policy.json``.

    python benchmarks/bench_policy.py [--policy policies/navigate_ltc_barrier.pt]
"""

from __future__ import annotations

import argparse
import time

import gymnasium as gym
import numpy as np
import torch
from _util import write

import safeliquid.envs  # noqa: F401 - registers the environments
from safeliquid import load_policy
from safeliquid.policies import scene_rows, shipped
from safeliquid.safety.constraints import rhs
from safeliquid.train.data import collect, make_batch
from safeliquid.train.imitation import loss_on


def states_and_obs(env_id: str, steps: int) -> list[tuple[np.ndarray, np.ndarray, object]]:
    """Observations, states and constraint sets along expert episodes (what a control loop sees)."""
    from safeliquid.envs.experts import make_expert

    env, expert = gym.make(env_id), make_expert(env_id)
    out, seed = [], 0
    while len(out) < steps:
        obs, _ = env.reset(seed=10_000 + seed)
        expert.reset(env)
        done = False
        while not done and len(out) < steps:
            out.append((obs, env.unwrapped.safety_state(), env.unwrapped.constraints))
            obs, _, term, trunc, _ = env.step(expert(env))
            done = term or trunc
        seed += 1
    return out


def latency_ours(policy, samples) -> np.ndarray:
    policy.reset()
    times = []
    for obs, state, cons in samples:
        t0 = time.perf_counter()
        policy.act(obs, state, cons)
        times.append(time.perf_counter() - t0)
    return np.asarray(times[20:]) * 1e6


def latency_naive(policy, samples) -> np.ndarray:
    """ncps LTCCell + torch encoder + qpth on the same rows (the stack one would write from the papers' code)."""
    from qpth.qp import QPFunction

    ref = ncps_twin(policy.cell)
    h = torch.zeros(1, policy.cell.state_size)
    m = policy.config.act_dim
    times = []
    for obs, state, cons in samples:
        t0 = time.perf_counter()
        with torch.no_grad():
            o = torch.as_tensor(obs).unsqueeze(0)
            z = policy.encoder((o - policy.obs_mean) / policy.obs_std)
            y, h = ref(z, h, elapsed_time=policy.config.dt)
            y = policy.head(y)
            u_ref = policy.bound * torch.tanh(y[:, :m])
            mult = policy.config.gain_range ** torch.tanh(y[:, m:].reshape(1, len(policy.config.gain_groups), -1))
            x = torch.as_tensor(state).unsqueeze(0)
            rows = scene_rows(cons, x, policy.config.gain_groups)
            gains = rows["default"] * torch.gather(
                mult.double(), 1, rows["group"].clamp_min(0).unsqueeze(-1).expand(-1, -1, 2)
            )
            b = rhs(rows["L"], rows["degree"], gains)
            bound = policy.bound.double()
            G = torch.cat([-rows["A"][0], torch.eye(m), -torch.eye(m)]).double()
            hh = torch.cat([b[0], bound, bound])
            QPFunction(verbose=-1)(torch.eye(m).double(), -u_ref.double()[0], G, hh, torch.empty(0), torch.empty(0))
        times.append(time.perf_counter() - t0)
    return np.asarray(times[20:]) * 1e6


def ncps_twin(cell):
    """The ncps 1.0.1 ``LTCCell`` with our cell's wiring and weights, checked to compute the same step."""
    from ncps.torch import LTCCell as NcpsLTC
    from ncps.wirings import Wiring

    wiring = Wiring(cell.wiring.units)
    wiring.build(cell.input_size)
    wiring.adjacency_matrix = np.asarray(cell.wiring.adjacency, dtype=np.int32)
    wiring.sensory_adjacency_matrix = np.asarray(cell.wiring.sensory_adjacency, dtype=np.int32)
    wiring.set_output_dim(cell.wiring.output_dim)
    # implicit_param_constraints: ncps applies softplus to the positive parameters, as ours are stored.
    ref = NcpsLTC(wiring, cell.input_size, ode_unfolds=cell.ode_unfolds, implicit_param_constraints=True)
    ref.load_state_dict(cell.state_dict(), strict=True)
    x, h = torch.randn(4, cell.input_size), torch.randn(4, cell.state_size)
    with torch.no_grad():
        gap = (ref(x, h, elapsed_time=0.05)[1] - cell(x, h, 0.05)[1]).abs().max()
    if gap > 1e-5:
        raise RuntimeError(f"the ncps twin differs from our LTC by {gap:.2e}; the latency comparison would be unfair")
    return ref


def throughput(policy, episodes, backend: str, repeats: int) -> float:
    batch = make_batch(episodes, policy.config.gain_groups)
    samples = int(batch["step_mask"].sum())
    loss_on(policy, batch, backend)[0].backward()  # warm-up
    t0 = time.perf_counter()
    for _ in range(repeats):
        policy.zero_grad()
        loss_on(policy, batch, backend)[0].backward()
    return samples * repeats / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", help="checkpoint (default: the shipped Navigate policy)")
    parser.add_argument("--steps", type=int, default=1000, help="control steps timed")
    args = parser.parse_args()
    torch.set_num_threads(1)
    env_id = "safeliquid/Navigate-v0"
    policy = load_policy(args.policy or shipped(env_id))
    samples = states_and_obs(env_id, args.steps)
    ours, naive = latency_ours(policy, samples), latency_naive(policy, samples[:300])
    episodes = collect(env_id, list(range(20_000, 20_016)), workers=0)
    native = throughput(policy, episodes, "native", 5)
    qpth = throughput(policy, episodes, "qpth", 1)
    rows = {
        "latency_us": {
            "safeliquid": {"median": float(np.median(ours)), "p99": float(np.percentile(ours, 99))},
            "ncps_ltc+qpth": {"median": float(np.median(naive)), "p99": float(np.percentile(naive, 99))},
            "target_median_us": 300,
        },
        "train_samples_per_s": {"native": native, "qpth": qpth, "batch_episodes": 16},
    }
    print(f"control step: ours {np.median(ours):.0f} µs (p99 {np.percentile(ours, 99):.0f}); "
          f"ncps LTC + qpth {np.median(naive):.0f} µs (p99 {np.percentile(naive, 99):.0f})")  # fmt: skip
    print(f"training: {native:.0f} samples/s with the native QP, {qpth:.0f} with qpth ({native / qpth:.1f}x)")
    print("wrote", write("policy", rows))


if __name__ == "__main__":
    main()
