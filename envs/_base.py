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
    ``action_noise``: actuator noise: std of Gaussian noise on the commanded action, relative to the action
    bound, added after clipping and clipped again (the actuator saturates), drawn from its own stream.
    ``disturbance``: an external force on the robot's body, applied through PyBullet (not through the
    actuators), drawn each control step from its own stream: Gaussian with std ``disturbance *
    disturbance_scale`` per component (N), truncated at 3 std, so bounded (:meth:`disturbance_bound`). Where it
    acts is the environment's (:attr:`disturbance_point`).
    ``randomize_mass``: relative spread of the robot's masses (uniform in ``1 ± randomize_mass``).
    ``mass_scale``: the robot's masses times this (a changed robot; with ``randomize_mass``, the spread's centre).
    ``terminate_on_violation``: end the episode at the first step with ``cost == 1``.
    ``dt_jitter``: sampling jitter: each control period lasts ``dt * (1 + dt_jitter * U(-1, 1))`` (the
    physics step scaled with it), drawn from its own stream; ``info["dt"]`` is the period that just elapsed,
    the time between the previous observation and this one. The safety layers' sampled-data corrections
    are made for the nominal ``dt``: under jitter their certificate does not cover the longer periods.

    Every ``info`` carries ``dt`` and ``position`` (the robot's position in its task space: :meth:`position`).
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array", "human"], "render_fps": 20}
    dt: float  # control period (s)
    physics_substeps: int
    disturbance_scale: float  # N: the external force per unit of ``disturbance``
    disturbance_dim: int  # components of the external force (world frame, from x)
    disturbance_point: str  # where the external force acts, for the docs
    gravity: tuple[float, float, float] = (0.0, 0.0, -9.81)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "dt" in cls.__dict__:  # one rendered frame per control step
            cls.metadata = {**cls.metadata, "render_fps": round(1.0 / cls.dt)}

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
        mass_scale: float = 1.0,
        dt_jitter: float = 0.0,
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
        if not (np.isfinite(mass_scale) and mass_scale > 0):
            raise ValueError(f"mass_scale must be a finite number > 0, got {mass_scale}")
        if not (np.isfinite(dt_jitter) and 0 <= dt_jitter < 1):
            raise ValueError(f"dt_jitter must be a number in [0, 1) (a relative spread of the period), got {dt_jitter}")
        if randomize_mass >= 1:
            raise ValueError(f"randomize_mass must be < 1 (a relative spread), got {randomize_mass}")
        self.render_mode = render_mode
        self.obs_noise, self.action_noise, self.disturbance = obs_noise, action_noise, disturbance
        self.randomize_mass, self.terminate_on_violation = randomize_mass, terminate_on_violation
        self.mass_scale, self.dt_jitter = float(mass_scale), float(dt_jitter)
        self.step_dt = self.dt  # the control period that just elapsed (s): dt unless dt_jitter > 0
        self.action_bound = np.asarray(action_bound, dtype=np.float64)
        bound32 = self.action_bound.astype(np.float32)
        self.action_space = gym.spaces.Box(-bound32, bound32, dtype=np.float32)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32)
        self.sim = BulletSim(gui=render_mode == "human", timestep=self.dt / self.physics_substeps)
        # Own streams for the actuator noise, the disturbance and the jitter (they never share draws with each
        # other or with the scene and observation noise of ``np_random``); reseeded by ``reset(seed=...)``.
        self._noise_rng, self._push_rng, self._jitter_rng = self._streams(None)
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

    def _apply(self, action: np.ndarray, push: np.ndarray | None) -> bool:
        """Advance one control period with ``action`` at the actuators and the external force ``push``
        ``(disturbance_dim,)`` (N, world frame) or None; return whether any contact happened."""
        raise NotImplementedError

    def _task(self, state: np.ndarray) -> tuple[float, bool, bool]:
        """``(reward, is_success, terminated)`` after a step."""
        raise NotImplementedError

    def _task_reset(self, state: np.ndarray) -> None:
        """Hook for task bookkeeping at reset (e.g. the distance to the goal)."""

    def position(self, state: np.ndarray) -> np.ndarray:
        """The robot's position in its task space now, shape ``(d,)`` (m; ``state``: :meth:`safety_state`'s,
        now): what a path length is measured on."""
        raise NotImplementedError

    # -- gymnasium API -----------------------------------------------------------------------
    def _observation(self, state: np.ndarray) -> np.ndarray:
        obs = self._observe(state)
        if self.obs_noise > 0:
            obs = obs + self.np_random.normal(0.0, self.obs_noise, obs.shape)
        return obs.astype(np.float32)

    def _mass_scale(self) -> float:
        return self.mass_scale * (1.0 + self.randomize_mass * float(self.np_random.uniform(-1.0, 1.0)))

    @staticmethod
    def _streams(seed: int | None) -> tuple[np.random.Generator, np.random.Generator, np.random.Generator]:
        root = np.random.SeedSequence(seed)
        noise, push, jitter = root.spawn(3)  # spawn's children are fixed by index: adding one changes no other
        return np.random.default_rng(noise), np.random.default_rng(push), np.random.default_rng(jitter)

    def disturbance_bound(self) -> float:
        """The largest magnitude of each component of the external force (N): 3 std, where it is truncated."""
        return 3.0 * self.disturbance * self.disturbance_scale

    disturbance_matched = True  # the external force enters as the actuators' does (a safety layer can be robust)

    def disturbance_input_bound(self) -> np.ndarray:
        """The disturbance's bound in the input's units ``(m,)``, for a robust safety layer
        (``SafetyFilterWrapper(env, robust=True)``): where the external force enters as the actuators' does
        (Navigate's disc, CartPoleRail's cart), each component's :meth:`disturbance_bound`."""
        if not self.disturbance_matched:
            raise NotImplementedError(
                f"{type(self).__name__}'s disturbance acts at {self.disturbance_point}, not through the inputs: "
                "no per-input bound is declared"
            )
        return np.full(self.action_bound.shape, self.disturbance_bound())

    def _draw_disturbance(self) -> np.ndarray | None:
        if not self.disturbance > 0:
            return None
        draw = np.clip(self._push_rng.standard_normal(self.disturbance_dim), -3.0, 3.0)
        return draw * self.disturbance * self.disturbance_scale

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        if seed is not None:
            self._noise_rng, self._push_rng, self._jitter_rng = self._streams(seed)
        self.step_dt = self.dt
        self.sim.timestep = self.dt / self.physics_substeps  # a jittered episode's last period is not the next's
        self.sim.reset(self.gravity)
        self._build()
        self._built = True
        state = self.safety_state()
        self._task_reset(state)
        h = self.barrier_values(state)
        # The step keys too, so that a vector env's autoreset step (which returns this info) carries them.
        return self._observation(state), {"cost": float((h < 0).any()), **self._barrier_info(h), **self._where(state)}

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
            noise = self._noise_rng.normal(0.0, self.action_noise, a.shape) * self.action_bound
            applied = np.clip(applied + noise, -self.action_bound, self.action_bound)
        if self.dt_jitter > 0:
            self.step_dt = self.dt * (1.0 + self.dt_jitter * float(self._jitter_rng.uniform(-1.0, 1.0)))
            self.sim.set_timestep(self.step_dt / self.physics_substeps)
        contact = self._apply(applied, self._draw_disturbance())
        state = self.safety_state()
        h = self.barrier_values(state)
        reward, success, done = self._task(state)
        violated = bool((h < 0).any()) or contact
        assert self.constraints is not None
        info: dict[str, Any] = {
            "cost": float(violated),
            **self._barrier_info(h),
            "contact": contact,
            "action_clipped": clipped,
            "is_success": success,
            **self._where(state),
        }
        terminated = done or (violated and self.terminate_on_violation)
        return self._observation(state), float(reward), terminated, False, info

    def _where(self, state: np.ndarray) -> dict[str, Any]:
        return {"dt": self.step_dt, "position": self.position(state)}

    def _barrier_info(self, h: np.ndarray) -> dict[str, float]:
        assert self.constraints is not None
        names = self.constraints.names
        return {"barrier_min_h": float(h.min()), **{f"barrier_h/{n}": float(v) for n, v in zip(names, h, strict=True)}}

    def _camera(self) -> tuple[tuple[float, float, float], float, float, float]:
        """``(target, distance, yaw, pitch)`` of the render camera."""
        raise NotImplementedError

    def render(self) -> np.ndarray | None:
        if self.render_mode == "rgb_array":
            target, distance, yaw, pitch = self._camera()
            return self.sim.render(target, distance, yaw=yaw, pitch=pitch)
        return None

    def close(self) -> None:
        """Disconnect the PyBullet client; a later :meth:`reset` connects a new one."""
        self.sim.close()
        self._built = False
