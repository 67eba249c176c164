"""Navigate: a disc robot pushed by bounded forces to a goal among random cylindrical obstacles.

The robot slides on two prismatic joints (x, y) with no gravity, friction or
damping, so PyBullet simulates exactly a planar double integrator, the model the
safety layer uses: state ``[px, py, vx, vy]``, control a force in newtons.
Each obstacle is a barrier ``h = |p - c|^2 - (r + r_robot + margin)^2 >= 0``
(relative degree 2 under force control); forces are limited per axis.

Observation (default, 20 values): own velocity (2), goal minus position (2),
and a range scan of ``n_rays`` PyBullet ray casts (distances to obstacle
surfaces, capped at ``scan_range``), so a policy works from sensors.
``privileged=True`` appends position and every obstacle's ``(cx, cy, r)``,
zero-padded to the maximum obstacle count.
"""

from __future__ import annotations

from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import pybullet as p
import torch
from safeliquid.envs._sim import BulletSim

from safeliquid.safety import ConstraintSet, DoubleIntegrator, cylinder_obstacle, position


class NavigateEnv(gym.Env):
    """See the module docstring. Options (all seeded by ``reset(seed=...)``):

    ``obs_noise`` std of Gaussian observation noise; ``action_noise`` std (N) added
    to the applied force; ``disturbance`` std (N) of a random external force each
    step; ``randomize_mass`` relative spread of the robot's mass; ``n_obstacles``
    (min, max); ``terminate_on_violation``.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array", "human"], "render_fps": 20}

    robot_radius = 0.2
    force_limit = 5.0
    dt = 0.05  # control period; physics runs at 200 Hz underneath
    goal_tolerance = 0.2

    def __init__(
        self,
        render_mode: str | None = None,
        n_obstacles: tuple[int, int] = (3, 6),
        n_rays: int = 16,
        scan_range: float = 4.0,
        margin: float = 0.05,
        privileged: bool = False,
        obs_noise: float = 0.0,
        action_noise: float = 0.0,
        disturbance: float = 0.0,
        randomize_mass: float = 0.0,
        terminate_on_violation: bool = False,
    ) -> None:
        if render_mode not in (None, *self.metadata["render_modes"]):
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']} or None, got {render_mode!r}")
        if not 1 <= n_obstacles[0] <= n_obstacles[1]:
            raise ValueError(f"n_obstacles must be (min, max) with 1 <= min <= max, got {n_obstacles}")
        self.render_mode = render_mode
        self.n_obstacles, self.n_rays, self.scan_range, self.margin = n_obstacles, n_rays, scan_range, margin
        self.privileged = privileged
        self.obs_noise, self.action_noise, self.disturbance = obs_noise, action_noise, disturbance
        self.randomize_mass, self.terminate_on_violation = randomize_mass, terminate_on_violation
        obs_dim = 4 + n_rays + (2 + 3 * n_obstacles[1] if privileged else 0)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32)
        self.action_space = gym.spaces.Box(-self.force_limit, self.force_limit, (2,), np.float32)
        self.sim = BulletSim(gui=render_mode == "human", timestep=self.dt / 10)
        self._substeps = 10
        angles = np.linspace(0.0, 2 * np.pi, n_rays, endpoint=False)
        self._ray_dirs = np.stack([np.cos(angles), np.sin(angles)], 1)
        self.model = DoubleIntegrator(2)
        self.constraints: ConstraintSet | None = None
        self._robot = -1
        self._obstacle_ids: list[int] = []
        self.obstacles = np.zeros((0, 3))
        self.goal = np.zeros(2)
        self.mass = 1.0

    # -- scene ---------------------------------------------------------------------
    def _build(self) -> None:
        sim, rng = self.sim, self.np_random
        sim.reset(gravity=(0.0, 0.0, 0.0))
        self.mass = 1.0 * (1.0 + self.randomize_mass * rng.uniform(-1, 1))
        count = int(rng.integers(self.n_obstacles[0], self.n_obstacles[1] + 1))
        start = rng.uniform(-3, 3, 2)
        goal = rng.uniform(-3, 3, 2)
        while np.linalg.norm(goal - start) < 3.0:
            goal = rng.uniform(-3, 3, 2)
        obstacles: list[np.ndarray] = []
        while len(obstacles) < count:
            c, r = rng.uniform(-3.5, 3.5, 2), rng.uniform(0.2, 0.5)
            clear = r + self.robot_radius + self.margin + 0.15
            if np.linalg.norm(c - start) < clear or np.linalg.norm(c - goal) < clear:
                continue
            if any(np.linalg.norm(c - o[:2]) < r + o[2] + 2 * self.robot_radius + 0.1 for o in obstacles):
                continue  # leave room to pass between obstacles
            obstacles.append(np.array([c[0], c[1], r]))
        self.obstacles, self.goal = np.array(obstacles), goal
        self._obstacle_ids = [
            sim.call(
                p.createMultiBody,
                0.0,
                sim.call(p.createCollisionShape, p.GEOM_CYLINDER, radius=float(r), height=1.0),
                sim.call(
                    p.createVisualShape, p.GEOM_CYLINDER, radius=float(r), length=1.0, rgbaColor=[0.8, 0.3, 0.2, 1]
                ),
                basePosition=[float(cx), float(cy), 0.5],
            )
            for cx, cy, r in self.obstacles
        ]
        disc = sim.call(p.createCollisionShape, p.GEOM_CYLINDER, radius=self.robot_radius, height=0.2)
        disc_vis = sim.call(
            p.createVisualShape, p.GEOM_CYLINDER, radius=self.robot_radius, length=0.2, rgbaColor=[0.2, 0.4, 0.9, 1]
        )
        # A fixed, massless base with an x slider (nearly massless) carrying a y slider (the disc).
        self._robot = sim.call(
            p.createMultiBody,
            baseMass=0.0,
            basePosition=[0.0, 0.0, 0.1],
            linkMasses=[1e-6, self.mass],
            linkCollisionShapeIndices=[-1, disc],
            linkVisualShapeIndices=[-1, disc_vis],
            linkPositions=[[0, 0, 0], [0, 0, 0]],
            linkOrientations=[[0, 0, 0, 1], [0, 0, 0, 1]],
            linkInertialFramePositions=[[0, 0, 0], [0, 0, 0]],
            linkInertialFrameOrientations=[[0, 0, 0, 1], [0, 0, 0, 1]],
            linkParentIndices=[0, 1],
            linkJointTypes=[p.JOINT_PRISMATIC, p.JOINT_PRISMATIC],
            linkJointAxis=[[1, 0, 0], [0, 1, 0]],
        )
        for j in (0, 1):
            sim.call(p.changeDynamics, self._robot, j, linearDamping=0.0, angularDamping=0.0, jointDamping=0.0)
            sim.call(p.setJointMotorControl2, self._robot, j, p.VELOCITY_CONTROL, force=0.0)  # free the joint
            sim.call(p.resetJointState, self._robot, j, float(start[j]), 0.0)
        self.model = DoubleIntegrator(2, mass=self.mass + 1e-6)
        barriers = [
            b
            for i, (cx, cy, r) in enumerate(self.obstacles)
            for b in cylinder_obstacle(f"obstacle{i}", position([0, 1]), [cx, cy], r + self.robot_radius, self.margin)
        ]
        samples = torch.as_tensor(rng.uniform(-4, 4, (16, 4)), dtype=torch.float64)
        limit = [self.force_limit] * 2
        self.constraints = ConstraintSet(self.model, barriers, samples, [-f for f in limit], limit)

    # -- state and sensing ---------------------------------------------------------------
    def safety_state(self) -> np.ndarray:
        """``[px, py, vx, vy]``: the state of :attr:`model` and :attr:`constraints`."""
        (px, vx, *_), (py, vy, *_) = self.sim.call(p.getJointStates, self._robot, [0, 1])
        return np.array([px, py, vx, vy])

    def barrier_values(self, state: np.ndarray | None = None) -> np.ndarray:
        """``h_k >= 0`` safe, one per obstacle, shape ``(K,)``, at ``state`` (default: now)."""
        s = self.safety_state() if state is None else state
        reach = self.obstacles[:, 2] + self.robot_radius + self.margin
        return ((s[:2] - self.obstacles[:, :2]) ** 2).sum(1) - reach**2

    def _scan(self, pos: np.ndarray) -> np.ndarray:
        origin = np.array([pos[0], pos[1], 0.1])
        starts = origin + np.concatenate([self._ray_dirs * (self.robot_radius + 1e-3), np.zeros((self.n_rays, 1))], 1)
        ends = origin + np.concatenate([self._ray_dirs * self.scan_range, np.zeros((self.n_rays, 1))], 1)
        hits = self.sim.call(p.rayTestBatch, starts.tolist(), ends.tolist())
        frac = np.array([h[2] if h[0] >= 0 else 1.0 for h in hits])
        return self.robot_radius + 1e-3 + frac * (self.scan_range - self.robot_radius - 1e-3)

    def _observation(self, state: np.ndarray) -> np.ndarray:
        parts = [state[2:], self.goal - state[:2], self._scan(state[:2])]
        if self.privileged:
            padded = np.zeros((self.n_obstacles[1], 3))
            padded[: len(self.obstacles)] = self.obstacles
            parts += [state[:2], padded.ravel()]
        obs = np.concatenate(parts)
        if self.obs_noise > 0:
            obs = obs + self.np_random.normal(0.0, self.obs_noise, obs.shape)
        return obs.astype(np.float32)

    # -- gymnasium API -------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self._build()
        state = self.safety_state()
        self._distance = float(np.linalg.norm(self.goal - state[:2]))
        return self._observation(state), {"barrier_min_h": float(self.barrier_values(state).min())}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self._robot < 0:
            raise RuntimeError("call reset() before step()")
        a = np.asarray(action, dtype=np.float64)
        if a.shape != (2,):
            raise ValueError(f"action must have shape (2,) (force x, y in N), got {a.shape}")
        if not np.isfinite(a).all():
            raise ValueError(f"action contains NaN or inf: {a}")
        force = np.clip(a, -self.force_limit, self.force_limit)
        clipped = bool((force != a).any())
        if self.action_noise > 0:
            force = force + self.np_random.normal(0.0, self.action_noise, 2)
        if self.disturbance > 0:
            force = force + self.np_random.normal(0.0, self.disturbance, 2)
        contact = False
        for _ in range(self._substeps):
            self.sim.call(p.setJointMotorControlArray, self._robot, [0, 1], p.TORQUE_CONTROL, forces=force.tolist())
            self.sim.call(p.stepSimulation)
            contact = contact or len(self.sim.call(p.getContactPoints, self._robot)) > 0
        state = self.safety_state()
        h = self.barrier_values(state)
        distance = float(np.linalg.norm(self.goal - state[:2]))
        reward = self._distance - distance
        self._distance = distance
        success = distance < self.goal_tolerance
        violated = bool((h < 0).any()) or contact
        info: dict[str, Any] = {
            "cost": float(violated),
            "barrier_min_h": float(h.min()),
            **{f"barrier_h/obstacle{i}": float(v) for i, v in enumerate(h)},
            "contact": contact,
            "action_clipped": clipped,
            "is_success": success,
        }
        terminated = success or (violated and self.terminate_on_violation)
        return self._observation(state), float(reward), terminated, False, info

    def render(self) -> np.ndarray | None:
        if self.render_mode == "rgb_array":
            return self.sim.render((0.0, 0.0, 0.0), distance=9.0)
        return None

    def close(self) -> None:
        self.sim.close()
