"""The safety filter for a synchronous vector environment: every sub-environment's action in one QP solve."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from safeliquid.safety.layer import BarrierLayer, project_many


class SafetyFilterVectorWrapper(gym.vector.VectorWrapper):
    """Filter the actions ``(N, m)`` of a :class:`gymnasium.vector.SyncVectorEnv` whose sub-environments expose
    ``constraints``, ``safety_state()`` and ``dt`` (safeliquid's environments do), with each sub-environment's
    constraint set of the moment (a new scene per episode is followed) and one batched QP solve per vector
    step (:func:`~safeliquid.safety.layer.project_many`; the same actions as wrapping each sub-environment in
    :class:`SafetyFilterWrapper`, which an ``AsyncVectorEnv`` needs: ``gym.make_vec(id, n,
    vectorization_mode="async", wrappers=[SafetyFilterWrapper])``).

    ``info`` gets, per sub-environment (gymnasium's vector ``info`` layout, with ``_``-masks):
    ``filter/u_safe``, ``filter/intervention``, ``filter/slack_max``, ``filter/fallback`` and
    ``filter/solver_status``.
    A NaN/inf action raises ``ValueError``.
    """

    def __init__(self, env: gym.vector.VectorEnv) -> None:
        if not isinstance(env.unwrapped, gym.vector.SyncVectorEnv):
            raise TypeError(
                f"SafetyFilterVectorWrapper needs a SyncVectorEnv (it reads each sub-environment's state), got "
                f"{type(env.unwrapped).__name__}; for async ones wrap each sub-environment in SafetyFilterWrapper"
            )
        super().__init__(env)
        self._layers: list[BarrierLayer | None] = [None] * self.num_envs

    def _layer(self, i: int) -> BarrierLayer:
        base = self.env.unwrapped.envs[i].unwrapped
        layer = self._layers[i]
        if layer is None or layer.constraints is not base.constraints:  # a new scene since the last step
            layer = self._layers[i] = BarrierLayer(base.constraints, dt=base.dt, action_name="u_raw")
        return layer

    def step(self, actions: np.ndarray) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
        u_raw = np.asarray(actions, dtype=np.float64).reshape(self.num_envs, -1)
        subs = self.env.unwrapped.envs
        x = np.stack([sub.unwrapped.safety_state() for sub in subs])
        u_safe, records = project_many([self._layer(i) for i in range(self.num_envs)], x, u_raw)
        obs, reward, terminated, truncated, info = self.env.step(u_safe.astype(self.single_action_space.dtype))
        mask = np.ones(self.num_envs, dtype=bool)
        info = dict(info)
        for key, values in (
            ("filter/u_safe", u_safe),
            ("filter/intervention", np.array([float(r.intervention[0]) for r in records])),
            ("filter/slack_max", np.array([float(r.slack.max()) if r.slack.size else 0.0 for r in records])),
            ("filter/fallback", np.array([bool(r.fallback[0]) for r in records])),
            ("filter/solver_status", np.array([r.status_names()[0] for r in records], dtype=object)),
        ):
            info[key], info[f"_{key}"] = values, mask
        return obs, reward, terminated, truncated, info
