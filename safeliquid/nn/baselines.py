"""Baseline cells behind the same one-step interface, for the comparisons safeliquid publishes.

Discrete-time cells (MLP, LSTM, GRU) ignore ``dt``; continuous-time ones
(CT-RNN, neural ODE) integrate over it with ``ode_unfolds`` sub-steps.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from safeliquid.nn.base import Cell, as_column


class MLPCell(Cell):
    """Stateless: ``y = MLP(x)``; the state has size 0. ``hidden`` units per layer, tanh."""

    def __init__(self, input_size: int, hidden: int, output_size: int, layers: int = 2) -> None:
        super().__init__()
        self.input_size, self.state_size, self.output_size = input_size, 0, output_size
        mods: list[nn.Module] = []
        width = input_size
        for _ in range(layers):
            mods += [nn.Linear(width, hidden), nn.Tanh()]
            width = hidden
        mods.append(nn.Linear(width, output_size))
        self.net = nn.Sequential(*mods)

    def step(self, prep: None, x: Tensor, h: Tensor, dt: float | Tensor) -> tuple[Tensor, Tensor]:
        return self.net(x), h


class LSTMCell(Cell):
    """``torch.nn.LSTMCell``; the state packs ``[h, c]`` into ``(B, 2 * hidden)``, the output is ``h``."""

    def __init__(self, input_size: int, hidden: int) -> None:
        super().__init__()
        self.input_size, self.state_size, self.output_size = input_size, 2 * hidden, hidden
        self.hidden = hidden
        self.cell = nn.LSTMCell(input_size, hidden)

    def step(self, prep: None, x: Tensor, h: Tensor, dt: float | Tensor) -> tuple[Tensor, Tensor]:
        hx, cx = self.cell(x, (h[:, : self.hidden], h[:, self.hidden :]))
        return hx, torch.cat([hx, cx], dim=1)


class GRUCell(Cell):
    """``torch.nn.GRUCell``; state and output are the ``hidden`` values."""

    def __init__(self, input_size: int, hidden: int) -> None:
        super().__init__()
        self.input_size, self.state_size, self.output_size = input_size, hidden, hidden
        self.cell = nn.GRUCell(input_size, hidden)

    def step(self, prep: None, x: Tensor, h: Tensor, dt: float | Tensor) -> tuple[Tensor, Tensor]:
        hx = self.cell(x, h)
        return hx, hx


class CTRNNCell(Cell):
    """Continuous-time RNN ``tau dx/dt = -x + tanh(W x + U u + b)``, explicit Euler, ``tau = softplus(.) > 0``."""

    continuous_time = True

    def __init__(self, input_size: int, hidden: int, ode_unfolds: int = 6) -> None:
        super().__init__()
        self.input_size, self.state_size, self.output_size = input_size, hidden, hidden
        self.ode_unfolds = ode_unfolds
        self.recurrent = nn.Linear(hidden, hidden, bias=False)
        self.inp = nn.Linear(input_size, hidden)
        self.tau_raw = nn.Parameter(torch.zeros(hidden))  # softplus(0) = 0.69

    def step(self, prep: None, x: Tensor, h: Tensor, dt: float | Tensor) -> tuple[Tensor, Tensor]:
        sub = as_column(dt) / self.ode_unfolds
        rate = sub / F.softplus(self.tau_raw)
        drive = self.inp(x)
        for _ in range(self.ode_unfolds):
            h = h + rate * (torch.tanh(self.recurrent(h) + drive) - h)
        return h, h


class NeuralODECell(Cell):
    """Neural ODE ``dx/dt = f([x, u])`` with an MLP f (tanh), classical RK4 over ``dt`` in ``ode_unfolds`` steps."""

    continuous_time = True

    def __init__(self, input_size: int, hidden: int, width: int = 64, ode_unfolds: int = 3) -> None:
        super().__init__()
        self.input_size, self.state_size, self.output_size = input_size, hidden, hidden
        self.ode_unfolds = ode_unfolds
        self.f = nn.Sequential(nn.Linear(hidden + input_size, width), nn.Tanh(), nn.Linear(width, hidden))

    def step(self, prep: None, x: Tensor, h: Tensor, dt: float | Tensor) -> tuple[Tensor, Tensor]:
        sub = as_column(dt) / self.ode_unfolds

        def f(v: Tensor) -> Tensor:
            return self.f(torch.cat([v, x], dim=1))

        for _ in range(self.ode_unfolds):
            k1 = f(h)
            k2 = f(h + 0.5 * sub * k1)
            k3 = f(h + 0.5 * sub * k2)
            k4 = f(h + sub * k3)
            h = h + sub / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)
        return h, h
