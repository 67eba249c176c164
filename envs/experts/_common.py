"""The shape every expert shares: a reference controller, then the environment's CBF filter."""

from __future__ import annotations

from typing import Any

import numpy as np

from safeliquid.safety import FilterRecord, SafetyFilter


class FilteredExpert:
    """``expert.reset(env)`` at each episode start, then ``expert(env) -> action (m,) float32``.

    The expert reads the privileged state (``env.unwrapped.safety_state()``) and the
    scene, computes :meth:`reference` and passes it through
    :class:`~safeliquid.safety.SafetyFilter` over the episode's constraints at the
    environment's control period (its batch-1 numpy path). ``last_record`` holds the filter's record.
    """

    gamma = 1.0

    def __init__(self) -> None:
        self.filter: SafetyFilter | None = None
        self.last_record: FilterRecord | None = None

    def reset(self, env: Any) -> None:
        env = env.unwrapped
        self.filter = SafetyFilter(env.constraints, dt=env.dt, gamma=self.gamma)

    def reference(self, env: Any, state: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def __call__(self, env: Any) -> np.ndarray:
        env = env.unwrapped
        if self.filter is None:
            raise RuntimeError("call expert.reset(env) after env.reset() before asking for actions")
        state = env.safety_state()
        u_ref = np.clip(self.reference(env, state), -env.action_bound, env.action_bound)
        u, self.last_record = self.filter.filter_numpy(state, u_ref)
        return u.astype(np.float32)
