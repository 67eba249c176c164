"""A gymnasium wrapper that passes every action through the safety filter, whatever the agent."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from safeliquid.safety.filter import SafetyFilter


class SafetyFilterWrapper(gym.ActionWrapper):
    """Filter the agent's action with ``safety_filter`` before the environment sees it.

    ``state_fn(env)`` returns the state in the filter's model coordinates, shape
    ``(n,)`` (default: ``env.unwrapped.safety_state()``). The step's ``info`` gets
    ``u_raw``, ``u_safe``, ``intervention`` (``|u_safe - u_raw|``), ``slack_max``,
    ``solver_status`` and one ``barrier/<name>`` value per constraint (``>= 0`` safe).

    An action containing NaN/inf raises ``ValueError`` (the agent is broken; no
    action is sent). The action space is unchanged.
    """

    def __init__(
        self,
        env: gym.Env,
        safety_filter: SafetyFilter,
        state_fn: Callable[[gym.Env], np.ndarray] | None = None,
    ) -> None:
        super().__init__(env)
        if not isinstance(env.action_space, gym.spaces.Box):
            raise TypeError(f"SafetyFilterWrapper needs a Box action space, got {type(env.action_space).__name__}")
        m = safety_filter.model.control_dim
        if env.action_space.shape != (m,):
            raise ValueError(f"the filter's model has {m} inputs but the action space is {env.action_space.shape}")
        self.safety_filter = safety_filter
        self.state_fn = state_fn or (lambda e: e.unwrapped.safety_state())
        self._last: dict[str, Any] = {}

    def action(self, action: np.ndarray) -> np.ndarray:
        u_raw = np.asarray(action, dtype=np.float64)
        if not np.isfinite(u_raw).all():
            raise ValueError(f"the action contains NaN or inf: {u_raw}")
        x = torch.as_tensor(np.asarray(self.state_fn(self.env), dtype=np.float64)).unsqueeze(0)
        u, record = self.safety_filter.filter(x, torch.as_tensor(u_raw).unsqueeze(0))
        u_safe = u[0].numpy().astype(self.env.action_space.dtype)
        self._last = {
            "u_raw": u_raw,
            "u_safe": u_safe,
            "intervention": float(record.intervention[0]),
            "slack_max": float(record.slack[0].max()) if record.slack.numel() else 0.0,
            "solver_status": record.status_names()[0],
            **{f"barrier/{name}": float(v) for name, v in zip(record.names, record.barrier[0], strict=True)},
        }
        return u_safe

    def step(self, action: np.ndarray) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(self.action(action))
        return obs, reward, terminated, truncated, {**info, **self._last}
