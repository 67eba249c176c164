"""The observation encoder of a policy: a range scan through a circular convolution, then an MLP."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class Encoder(nn.Module):
    """``(..., obs_dim) -> (..., encoder_dim)``; a range scan goes through a circular Conv1d first."""

    def __init__(self, obs_dim: int, out: int, scan: tuple[int, int] | None) -> None:
        super().__init__()
        self.scan = scan
        if scan is None:
            self.conv = None
            flat = obs_dim
        else:
            self.conv = nn.Conv1d(1, 4, 5, padding=2, padding_mode="circular")
            flat = obs_dim - scan[1] + 4 * scan[1]
        self.linear = nn.Linear(flat, out)

    def forward(self, obs: Tensor) -> Tensor:
        if self.conv is not None and self.scan is not None:
            start, length = self.scan
            scan = obs[..., start : start + length]
            lead = scan.shape[:-1]
            feats = torch.relu(self.conv(scan.reshape(-1, 1, length))).reshape(*lead, -1)
            obs = torch.cat([obs[..., :start], obs[..., start + length :], feats], -1)
        return torch.tanh(self.linear(obs))
