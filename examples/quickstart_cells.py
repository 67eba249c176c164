"""Quick start: a 19-neuron liquid network learns a controller from irregularly sampled, partial observations.

The task: a double integrator (a mass on a rail) steered by a PD expert
``u = -2 x - 1.5 v``. The learner sees only a noisy position and the time since
the last sample (sampling is irregular), never the velocity, so it must infer
velocity from the history: a job for a recurrent, continuous-time cell. Each cell
is trained by imitation (backpropagation through time) on the same data and
scored on held-out trajectories. Runs in about a minute on 2 CPU cores.

    python examples/quickstart_cells.py
"""

from __future__ import annotations

import time

import torch

from safeliquid.nn import Sequence, make_cell


def make_data(batch: int, steps: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Trajectories under the expert: observations (B, T, 2) = [noisy x, dt], timespans (B, T), expert u (B, T, 1)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, generator=g) * 4 - 2
    v = torch.rand(batch, generator=g) * 2 - 1
    dts = torch.rand(batch, steps, generator=g) * 0.2 + 0.05
    obs, us = [], []
    for t in range(steps):
        u = (-2.0 * x - 1.5 * v).clamp(-3, 3)
        obs.append(torch.stack([x + 0.02 * torch.randn(batch, generator=g), dts[:, t]], 1))
        us.append(u)
        v = v + dts[:, t] * u
        x = x + dts[:, t] * v
    return torch.stack(obs, 1), dts, torch.stack(us, 1).unsqueeze(-1)


def main() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)  # tiny tensors: threads only add synchronisation
    train = make_data(256, 40, seed=1)
    test = make_data(256, 40, seed=2)
    print("Imitating a PD controller from noisy, irregularly sampled positions (no velocity).\n")
    print(f"{'cell':8s} {'params':>7s} {'held-out MSE':>13s} {'train s':>8s} {'step µs':>8s}")
    for name in ("ltc", "cfc", "lstm", "gru"):
        torch.manual_seed(0)
        units = 19 if name in ("ltc", "cfc") else 16
        cell = make_cell(name, 2, units, outputs=1)
        head = torch.nn.Linear(cell.output_size, 1)
        model = torch.nn.ModuleList([cell, head])
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        obs, dts, u = train
        t0 = time.perf_counter()
        for _ in range(250):
            idx = torch.randint(0, obs.shape[0], (64,))
            y, _ = Sequence(cell)(obs[idx], timespans=dts[idx])
            loss = (head(y) - u[idx]).square().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        seconds = time.perf_counter() - t0
        with torch.no_grad():
            y, _ = Sequence(cell)(test[0], timespans=test[1])
            mse = float((head(y) - test[2]).square().mean())
        with torch.inference_mode():  # one control step at batch 1, as on a robot
            x1, h = test[0][:1, 0], cell.initial_state(1)
            for _ in range(50):
                cell(x1, h, 0.1)
            t1 = time.perf_counter()
            for _ in range(500):
                _, h = cell(x1, h, 0.1)
            step_us = (time.perf_counter() - t1) / 500 * 1e6
        params = sum(p.numel() for p in model.parameters())
        print(f"{name:8s} {params:7d} {mse:13.4f} {seconds:8.1f} {step_us:8.1f}")
    print(f"\n(expert's force variance on the held-out set: {float(test[2].var()):.3f})")


if __name__ == "__main__":
    main()
