"""What every safeliquid environment shares: action checks, clipping, noise, the safety ``info``, render, close.

A subclass builds its scene in :meth:`_build` (which also sets ``model`` and
``constraints``), reads its state in :meth:`safety_state`, evaluates its barriers
in numpy in :meth:`barrier_values`, advances PyBullet in :meth:`_apply` and
scores in :meth:`_task`. Everything random comes from ``self.np_random``, so
``reset(seed=s)`` fixes the episode.
"""

from __future__ import annotations

from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from safeliquid.envs._sim import BulletSim

from safeliquid.safety import ConstraintSet, ControlAffine


class SafeBulletEnv(gym.Env):
    """Base class. Options common to every environment (all seeded by ``reset(seed=...)``):

    ``obs_noise``: std of Gaussian noise added to every observation entry.
    ``action_noise``: std of Gaussian noise on the applied action, relative to the action bound.
    ``disturbance``: std of a random external force/torque each step, relative to the action bound.
    ``randomize_mass``: relative spread of the robot's masses (uniform in ``1 ± randomize_mass``).
    ``terminate_on_violation``: end the episode at the first step with ``cost == 1``.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array", "human"], "render_fps": 20}
    dt: float  # control period (s)
    physics_substeps: int
    gravity: tuple[float, float, float] = (0.0, 0.0, -9.81)

    def __init__(
        self,
        action_bound: np.ndarray,
        obs_dim: int,
        render_mode: str | None = None,
        obs_noise: float = 0.0,
        action_noise: float = 0.0,
        disturbance: float = 0.0,
        randomize_mass: float = 0.0,
        terminate_on_violation: bool = False,
    ) -> None:
        if render_mode not in (None, *self.metadata["render_modes"]):
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']} or None, got {render_mode!r}")
        for name, v in (
            ("obs_noise", obs_noise),
            ("action_noise", action_noise),
            ("disturbance", disturbance),
            ("randomize_mass", randomize_mass),
        ):
            if not (np.isfinite(v) and v >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {v}")
        if randomize_mass >= 1:
            raise ValueError(f"randomize_mass must be < 1 (a relative spread), got {randomize_mass}")
        self.render_mode = render_mode
        self.obs_noise, self.action_noise, self.disturbance = obs_noise, action_noise, disturbance
        self.randomize_mass, self.terminate_on_violation = randomize_mass, terminate_on_violation
        self.action_bound = np.asarray(action_bound, dtype=np.float64)
        bound32 = self.action_bound.astype(np.float32)
        self.action_space = gym.spaces.Box(-bound32, bound32, dtype=np.float32)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32)
        self.sim = BulletSim(gui=render_mode == "human", timestep=self.dt / self.physics_substeps)
        self.model: ControlAffine | None = None
        self.constraints: ConstraintSet | None = None
        self._built = False

    # -- for subclasses ----------------------------------------------------------------------
    def _build(self) -> None:
        """Rebuild the world for a new episode from ``self.np_random``; set ``model`` and ``constraints``."""
        raise NotImplementedError

    def safety_state(self) -> np.ndarray:
        """The state of :attr:`model` and :attr:`constraints`, shape ``(n,)``."""
        raise NotImplementedError

    def barrier_values(self, state: np.ndarray | None = None) -> np.ndarray:
        """``h_k >= 0`` safe, shape ``(K,)`` in :attr:`constraints` order, at ``state`` (default: now)."""
        raise NotImplementedError

    def _observe(self, state: np.ndarray) -> np.ndarray:
        """The noise-free observation, shape ``(obs_dim,)``."""
        raise NotImplementedError

    def _apply(self, action: np.ndarray, external: np.ndarray) -> bool:
        """Advance one control period with ``action`` (plus ``external``); return whether any contact happened."""
        raise NotImplementedError

    def _task(self, state: np.ndarray) -> tuple[float, bool, bool]:
        """``(reward, is_success, terminated)`` after a step."""
        raise NotImplementedError

    def _task_reset(self, state: np.ndarray) -> None:
        """Hook for task bookkeeping at reset (e.g. the distance to the goal)."""

    # -- gymnasium API -----------------------------------------------------------------------
    def _observation(self, state: np.ndarray) -> np.ndarray:
        obs = self._observe(state)
        if self.obs_noise > 0:
            obs = obs + self.np_random.normal(0.0, self.obs_noise, obs.shape)
        return obs.astype(np.float32)

    def _mass_scale(self) -> float:
        return 1.0 + self.randomize_mass * float(self.np_random.uniform(-1.0, 1.0))

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.sim.reset(self.gravity)
        self._build()
        self._built = True
        state = self.safety_state()
        self._task_reset(state)
        h = self.barrier_values(state)
        return self._observation(state), {"barrier_min_h": float(h.min())}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if not self._built:
            raise RuntimeError("call reset() before step()")
        a = np.asarray(action, dtype=np.float64)
        if a.shape != self.action_bound.shape:
            raise ValueError(f"action must have shape {self.action_bound.shape}, got {a.shape}")
        if not np.isfinite(a).all():
            raise ValueError(f"action contains NaN or inf: {a}")
        applied = np.clip(a, -self.action_bound, self.action_bound)
        clipped = bool((applied != a).any())
        if self.action_noise > 0:
            applied = applied + self.np_random.normal(0.0, self.action_noise, a.shape) * self.action_bound
        external = np.zeros_like(a)
        if self.disturbance > 0:
            external = self.np_random.normal(0.0, self.disturbance, a.shape) * self.action_bound
        contact = self._apply(applied, external)
        state = self.safety_state()
        h = self.barrier_values(state)
        reward, success, done = self._task(state)
        violated = bool((h < 0).any()) or contact
        assert self.constraints is not None
        info: dict[str, Any] = {
            "cost": float(violated),
            "barrier_min_h": float(h.min()),
            **{f"barrier_h/{name}": float(v) for name, v in zip(self.constraints.names, h, strict=True)},
            "contact": contact,
            "action_clipped": clipped,
            "is_success": success,
        }
        terminated = done or (violated and self.terminate_on_violation)
        return self._observation(state), float(reward), terminated, False, info

    def _camera(self) -> tuple[tuple[float, float, float], float, float, float]:
        """``(target, distance, yaw, pitch)`` of the render camera."""
        raise NotImplementedError

    def render(self) -> np.ndarray | None:
        if self.render_mode == "rgb_array":
            target, distance, yaw, pitch = self._camera()
            return self.sim.render(target, distance, yaw=yaw, pitch=pitch)
        return None

    def close(self) -> None:
        self.sim.close()
