"""Model-based command priors: what a network's command means for a fully actuated second-order model
(joint accelerations, joint velocities or a task-space velocity), through the model's terms."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


def inverse_dynamics(f: Tensor, g: Tensor, accel: Tensor) -> Tensor:
    """The control giving the last ``m`` state entries the accelerations ``accel``: ``f (..., n)``,
    ``g (..., n, m)``, ``accel (..., m)`` -> ``u (..., m)`` with ``f_acc + g_acc u = accel``
    (``M a + c`` for an arm)."""
    m = accel.shape[-1]
    return torch.linalg.solve(g[..., -m:, :], (accel - f[..., -m:]).unsqueeze(-1)).squeeze(-1)


def dyn_needs(prior: str) -> tuple[int, str]:
    """How many of the model's terms a ``prior`` reads from ``dyn`` (as :func:`model_terms` returns them), and
    their names for an error message."""
    return (3, "f, g and the task Jacobian J") if prior == "task" else (2, "f and g")


def model_terms(model: Any, x: Tensor, prior: str | None) -> tuple[Tensor, ...]:
    """What a ``prior`` needs from the model at states ``x (B, n)``: ``(f, g)``, and ``J`` for ``"task"``."""
    with torch.no_grad():
        f, g = model.f(x), model.g(x)
        return (f, g, model.task_jacobian(x)) if prior == "task" else (f, g)
