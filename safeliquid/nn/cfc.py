"""Closed-form continuous-time cell (CfC, Hasani et al., Nature MI 2022).

The LTC ODE's solution approximated in closed form, so no solver runs:

    x(t) = sigma(-f t) * g + (1 - sigma(-f t)) * h          ("default", gated)

with f, g, h heads on a shared backbone of ``[input, state]``. As in ncps the
time gate is parametrised ``sigma(t_a * t + t_b)``; ``"no_gate"`` uses
``g + sigma(...) * h`` and ``"pure"`` the direct solution
``-A exp(-t (|w_tau| + |f|)) f + A``. A wired CfC (given a
:class:`~safeliquid.nn.wiring.Wiring`) runs one CfC per NCP layer, each masked
by the wiring's synapses, and outputs the motor layer.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from safeliquid.nn.base import Cell, as_column
from safeliquid.nn.wiring import Wiring

MODES = ("default", "no_gate", "pure")


class LeCunTanh(nn.Module):
    """``1.7159 tanh(0.666 x)``, the backbone activation of the CfC paper."""

    def forward(self, x: Tensor) -> Tensor:
        return 1.7159 * torch.tanh(0.666 * x)


class _CfCLayer(nn.Module):
    """One dense (optionally masked) CfC layer: ``(x (B, in), h (B, H), t float|(B,1)) -> h' (B, H)``."""

    def __init__(
        self, in_features: int, hidden: int, mode: str, backbone_units: int, backbone_layers: int, mask: Tensor | None
    ) -> None:
        super().__init__()
        self.mode = mode
        layers: list[nn.Module] = []
        width = in_features + hidden
        for _ in range(backbone_layers):
            layers += [nn.Linear(width, backbone_units), LeCunTanh()]
            width = backbone_units
        self.backbone = nn.Sequential(*layers)
        self.register_buffer("mask", mask)
        self.ff1 = nn.Linear(width, hidden)
        if mode == "pure":
            self.w_tau = nn.Parameter(torch.zeros(1, hidden))
            self.A = nn.Parameter(torch.ones(1, hidden))
        else:
            self.ff2 = nn.Linear(width, hidden)
            self.time_a = nn.Linear(width, hidden)
            self.time_b = nn.Linear(width, hidden)
        for p in self.parameters():
            if p.dim() == 2:
                nn.init.xavier_uniform_(p)

    def _masked(self, layer: nn.Linear, z: Tensor) -> Tensor:
        w = layer.weight if self.mask is None else layer.weight * self.mask
        return F.linear(z, w, layer.bias)

    def forward(self, x: Tensor, h: Tensor, t: float | Tensor) -> Tensor:
        z = self.backbone(torch.cat([x, h], dim=1))
        ff1 = self._masked(self.ff1, z)
        if self.mode == "pure":
            return -self.A * torch.exp(-t * (self.w_tau.abs() + ff1.abs())) * ff1 + self.A
        ff1, ff2 = torch.tanh(ff1), torch.tanh(self._masked(self.ff2, z))
        gate = torch.sigmoid(self.time_a(z) * t + self.time_b(z))
        if self.mode == "no_gate":
            return ff1 + gate * ff2
        return ff1 * (1.0 - gate) + gate * ff2


class CfCCell(Cell):
    """A CfC cell, dense (``units: int``) or wired (``units: Wiring``).

    Dense: state and output are the ``units`` hidden values. Wired: one CfC per
    wiring layer (inter, command, motor), the state is their concatenation in
    that order and the output is the motor layer, shape ``(B, wiring.output_dim)``.
    Backbone options apply to the dense form (wired layers have none, as in ncps).
    """

    continuous_time = True

    def __init__(
        self,
        input_size: int,
        units: int | Wiring,
        mode: str = "default",
        backbone_units: int = 128,
        backbone_layers: int = 1,
    ) -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.input_size = input_size
        self.mode = mode
        if isinstance(units, Wiring):
            wiring = units.build(input_size)
            assert wiring.sensory_adjacency is not None
            self.wiring: Wiring | None = wiring
            layers, sizes, prev, width = [], [], None, input_size
            for neurons in wiring.layers():
                src = wiring.sensory_adjacency[:, neurons] if prev is None else wiring.adjacency[np.ix_(prev, neurons)]
                mask = np.concatenate([np.abs(src), np.ones((len(neurons), len(neurons)))], 0).T
                layers.append(
                    _CfCLayer(width, len(neurons), mode, 0, 0, torch.tensor(mask, dtype=torch.get_default_dtype()))
                )
                sizes.append(len(neurons))
                prev, width = neurons, len(neurons)
            self.layers = nn.ModuleList(layers)
            self.layer_sizes = sizes
            self.state_size = sum(sizes)
            self.output_size = sizes[-1]
        else:
            if units < 1:
                raise ValueError(f"units must be positive, got {units}")
            self.wiring = None
            self.layers = nn.ModuleList([_CfCLayer(input_size, units, mode, backbone_units, backbone_layers, None)])
            self.layer_sizes = [units]
            self.state_size = self.output_size = units

    def step(self, prep: None, x: Tensor, h: Tensor, dt: float | Tensor) -> tuple[Tensor, Tensor]:
        t = as_column(dt)
        states = torch.split(h, self.layer_sizes, dim=1)
        new, inp = [], x
        for layer, hs in zip(self.layers, states, strict=True):
            inp = layer(inp, hs, t)
            new.append(inp)
        return inp, torch.cat(new, dim=1)
