"""A gymnasium wrapper that passes every action through the safety filter, whatever the agent."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np

from safeliquid.safety.filter import SafetyFilter


class SafetyFilterWrapper(gym.ActionWrapper, gym.utils.RecordConstructorArgs):
    """Filter the agent's action with ``safety_filter`` before the environment sees it.

    With ``safety_filter=None`` the wrapper builds ``SafetyFilter(env.unwrapped.constraints,
    dt=env.unwrapped.dt)`` at every reset, so it follows environments that sample a
    new scene (and a new constraint set) each episode.

    ``state_fn(env)`` returns the state in the filter's model coordinates, shape
    ``(n,)`` (default: ``env.unwrapped.safety_state()``). The step's ``info`` gets,
    under ``filter/``: ``u_raw``, ``u_safe``, ``intervention`` (``|u_safe - u_raw|``),
    ``slack_max``, ``solver_status``, ``fallback`` (the layer sent its fallback: the constraint set's
    backup controller, or the least-violating input; see :mod:`safeliquid.safety.layer`),
    ``corrections`` (sampled-data re-solves) and one ``barrier_h/<name>`` per constraint at
    the state the filter saw (``>= 0`` safe; the environment's own ``info`` keys are
    left as they are).

    ``robust=True`` (with ``safety_filter=None``): the filter's prediction is robust to the environment's
    declared bounded disturbance, ``env.unwrapped.disturbance_input_bound()`` (a matched one, in input
    units), one period at a time.

    An action containing NaN/inf raises ``ValueError`` (the agent is broken; no
    action is sent). The action space is unchanged. Each step runs the layer's batch-1
    numpy path (:meth:`SafetyFilter.filter_numpy`).
    """

    def __init__(
        self,
        env: gym.Env,
        safety_filter: SafetyFilter | None = None,
        state_fn: Callable[[gym.Env], np.ndarray] | None = None,
        robust: bool = False,
    ) -> None:
        gym.utils.RecordConstructorArgs.__init__(self, safety_filter=safety_filter, state_fn=state_fn, robust=robust)
        gym.ActionWrapper.__init__(self, env)
        if not isinstance(env.action_space, gym.spaces.Box):
            raise TypeError(f"SafetyFilterWrapper needs a Box action space, got {type(env.action_space).__name__}")
        self._follow_env = safety_filter is None
        if robust and not self._follow_env:
            raise ValueError("robust=True builds the filter from the environment; pass safety_filter=None")
        self.robust = robust
        if safety_filter is not None:
            self._check(safety_filter)
        self.safety_filter = safety_filter
        self.state_fn = state_fn or (lambda e: e.unwrapped.safety_state())
        self._last: dict[str, Any] = {}
        self._keys: tuple[list[str] | None, list[str]] = (None, [])

    def _check(self, safety_filter: SafetyFilter) -> None:
        m = safety_filter.model.control_dim
        if self.env.action_space.shape != (m,):
            raise ValueError(f"the filter's model has {m} inputs but the action space is {self.env.action_space.shape}")

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(**kwargs)
        if self._follow_env:
            inner = self.env.unwrapped
            w = inner.disturbance_input_bound() if self.robust else None  # type: ignore[attr-defined]
            self.safety_filter = SafetyFilter(inner.constraints, dt=getattr(inner, "dt", None), disturbance=w)  # type: ignore[attr-defined]
            self._check(self.safety_filter)
        return obs, info

    def action(self, action: np.ndarray) -> np.ndarray:
        if self.safety_filter is None:
            raise RuntimeError("call reset() first: the filter is built from the environment's constraints at reset")
        u_raw = np.asarray(action, dtype=np.float64)
        if not np.isfinite(u_raw).all():
            raise ValueError(f"the action contains NaN or inf: {u_raw}")
        x = np.asarray(self.state_fn(self.env), dtype=np.float64)
        u, record = self.safety_filter.filter_numpy(x, u_raw)
        u_safe = u.astype(self.env.action_space.dtype)
        self._last = {
            "filter/u_raw": u_raw,
            "filter/u_safe": u_safe,
            "filter/intervention": float(record.intervention[0]),
            "filter/slack_max": float(record.slack[0].max()) if record.slack.size else 0.0,
            "filter/solver_status": record.status_names()[0],
            "filter/fallback": bool(record.fallback[0]),
            "filter/corrections": int(record.corrections[0]),
            **dict(zip(self._barrier_keys(record.names), record.barrier[0].tolist(), strict=True)),
        }
        return u_safe

    def _barrier_keys(self, names: list[str]) -> list[str]:
        """The ``info`` keys of the barriers ``names``, built once per constraint set."""
        if self._keys[0] != names:  # a new scene (ArmReach's sphere, Navigate's obstacles) may rename them
            self._keys = (names, [f"filter/barrier_h/{n}" for n in names])
        return self._keys[1]

    def step(self, action: np.ndarray) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(self.action(action))
        return obs, reward, terminated, truncated, {**info, **self._last}
