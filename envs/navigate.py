"""Navigate: a disc robot pushed by bounded forces to a goal among random cylindrical obstacles.

The robot slides on two prismatic joints (x, y) with no gravity, friction or
damping, so PyBullet simulates exactly a planar double integrator, the model the
safety layer uses: state ``[px, py, vx, vy]``, control a force in newtons, limited
per axis. Each obstacle is a **braking barrier** (:mod:`safeliquid.safety.braking`):
the squared clearance ``dist(c, braking path)^2 - (r + r_robot + margin)^2 >= 0`` of
the straight path the robot would cover braking at full force from where it is, so
the safe set is certified under the force limit, with full braking as its backup
controller (relative degree 1). Where the robot stands still the barrier is the
plain clearance ``|p - c|^2 - R^2``; a step counts as violating (``cost``) when the
robot can no longer stop before an obstacle, which every collision is too.

Observation (default, 20 values): own velocity (2), goal minus position (2),
and a range scan of ``n_rays`` PyBullet ray casts (distances from the robot's
centre to obstacle surfaces, capped at ``scan_range``), so a policy works from
sensors. ``privileged=True`` appends position and every obstacle's
``(cx, cy, r)``, zero-padded to the maximum obstacle count.

Reward: the progress towards the goal each step (m), plus ``goal_bonus`` on the step that reaches it (as
safety-gymnasium's goal tasks reward reaching; 0 by default, so the return is the distance covered). Progress
alone pays hovering near the goal as much as reaching it; a bonus makes reaching worth learning by trial.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import pybullet as p
import torch

from safeliquid.envs._base import SafeBulletEnv
from safeliquid.safety import (
    Backup,
    ConstraintSet,
    DoubleIntegrator,
    brake,
    braking_obstacles,
    braking_terms,
    braking_values,
)


def braking_probes(centers: np.ndarray, reach: np.ndarray) -> np.ndarray:
    """One state ``[p, v]`` per obstacle ``(K, 2)`` centres and ``(K,)`` reaches: 1 m off its edge, moving straight
    at it at 2 m/s. There the braking path depends on the velocity, so each braking barrier's relative degree (1)
    shows on these states whatever else is sampled: ``(K, 4)``."""
    p = centers + (reach[:, None] + 1.0) * np.array([1.0, 0.0])
    return np.concatenate([p, np.tile([-2.0, 0.0], (len(centers), 1))], 1)


class NavigateEnv(SafeBulletEnv):
    """See the module docstring; common options in :class:`~safeliquid.envs._base.SafeBulletEnv`.

    ``n_obstacles``: (min, max) obstacles per episode; ``n_rays``, ``scan_range``: the scan;
    ``margin``: extra clearance (m) the barriers demand beyond contact; ``privileged``: see above;
    ``obstacle_radius``: (min, max) of the obstacles' radii, drawn uniformly per obstacle (m).
    """

    robot_radius = 0.2
    force_limit = 5.0
    obstacle_gain = 5.0  # default class-K gain of the braking barriers (1/s; a learned policy scales it)
    max_speed = 8.0  # m/s: the speeds the certification samples (the barrier's argument holds at any speed)
    disturbance_scale, disturbance_dim, disturbance_point = 5.0, 2, "the disc's centre, in the plane"
    dt = 0.05
    physics_substeps = 5  # 100 Hz physics under a 20 Hz controller
    gravity = (0.0, 0.0, 0.0)
    goal_tolerance = 0.2
    goal_offset_obs = 2  # where ``goal - position`` (2,) starts in the observation (``train --goal-gain``)
    arena = 3.5  # obstacles in [-arena, arena]^2; start and goal in [-3, 3]^2

    def __init__(
        self,
        render_mode: str | None = None,
        n_obstacles: tuple[int, int] = (3, 6),
        n_rays: int = 16,
        scan_range: float = 4.0,
        margin: float = 0.05,
        privileged: bool = False,
        goal_bonus: float = 0.0,
        obstacle_radius: tuple[float, float] = (0.2, 0.5),
        **options: float,
    ) -> None:
        lo, hi = (float(r) for r in obstacle_radius)
        if not (np.isfinite(hi) and 0 < lo <= hi):
            raise ValueError(f"obstacle_radius must be (min, max) m with 0 < min <= max, got {obstacle_radius}")
        self.obstacle_radius = (lo, hi)
        if not (np.isfinite(goal_bonus) and goal_bonus >= 0):
            raise ValueError(f"goal_bonus must be a finite number >= 0, got {goal_bonus}")
        self.goal_bonus = float(goal_bonus)
        if not 1 <= n_obstacles[0] <= n_obstacles[1]:
            raise ValueError(f"n_obstacles must be (min, max) with 1 <= min <= max, got {n_obstacles}")
        if n_rays < 1 or scan_range <= self.robot_radius:
            raise ValueError(f"need n_rays >= 1 and scan_range > {self.robot_radius}, got {n_rays}, {scan_range}")
        self.n_obstacles, self.n_rays, self.scan_range, self.margin = n_obstacles, n_rays, scan_range, margin
        self.privileged = privileged
        obs_dim = 4 + n_rays + (2 + 3 * n_obstacles[1] if privileged else 0)
        super().__init__(np.full(2, self.force_limit), obs_dim, render_mode, **options)  # type: ignore[arg-type]
        angles = np.linspace(0.0, 2 * np.pi, n_rays, endpoint=False)
        self._ray_dirs = np.stack([np.cos(angles), np.sin(angles), np.zeros(n_rays)], 1)
        self._robot = -1
        self._obstacle_ids: list[int] = []
        self.obstacles = np.zeros((0, 3))
        self.goal = np.zeros(2)
        self.mass = 1.0

    def _build(self) -> None:
        sim, rng = self.sim, self.np_random
        self.mass = self._mass_scale()
        count = int(rng.integers(self.n_obstacles[0], self.n_obstacles[1] + 1))
        start = rng.uniform(-3, 3, 2)
        goal = rng.uniform(-3, 3, 2)
        while np.linalg.norm(goal - start) < 3.0:
            goal = rng.uniform(-3, 3, 2)
        obstacles: list[np.ndarray] = []
        for _ in range(100_000):
            if len(obstacles) == count:
                break
            c, r = rng.uniform(-self.arena, self.arena, 2), rng.uniform(*self.obstacle_radius)
            clear = r + self.robot_radius + self.margin + 0.15
            if np.linalg.norm(c - start) < clear or np.linalg.norm(c - goal) < clear:
                continue
            if any(np.linalg.norm(c - o[:2]) < r + o[2] + 2 * self.robot_radius + 0.1 for o in obstacles):
                continue  # leave room to pass between obstacles
            obstacles.append(np.array([c[0], c[1], r]))
        else:
            raise ValueError(
                f"cannot place {count} obstacles of radius {self.obstacle_radius} m in the arena with room to pass; "
                "expected fewer obstacles (n_obstacles) or smaller ones (obstacle_radius)"
            )
        self.obstacles, self.goal = np.array(obstacles), goal
        self._obstacle_ids = [
            sim.call(
                p.createMultiBody,
                0.0,
                sim.call(p.createCollisionShape, p.GEOM_CYLINDER, radius=float(r), height=0.4),
                sim.call(
                    p.createVisualShape, p.GEOM_CYLINDER, radius=float(r), length=0.4, rgbaColor=[0.8, 0.3, 0.2, 1]
                ),
                basePosition=[float(cx), float(cy), 0.2],
            )
            for cx, cy, r in self.obstacles
        ]
        goal_vis = sim.call(
            p.createVisualShape, p.GEOM_CYLINDER, radius=0.15, length=0.02, rgbaColor=[0.1, 0.8, 0.2, 1]
        )
        sim.call(p.createMultiBody, 0.0, -1, goal_vis, basePosition=[float(goal[0]), float(goal[1]), 0.01])
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
        # The x slider (1e-6 kg) carries the y slider with the disc; PyBullet's integrator in the model's step.
        self.model = DoubleIntegrator(2, mass=[self.mass + 1e-6, self.mass], substeps=self.physics_substeps)
        m = self.model.mass
        decel = self.force_limit / m  # reachable in every direction within the per-axis box
        centers, reach_k = self.obstacles[:, :2].copy(), self.obstacles[:, 2] + self.robot_radius + self.margin
        barriers = braking_obstacles("obstacle", centers, reach_k, decel, self.dt, gains=[self.obstacle_gain])
        # Random states, plus braking_probes: a random draw alone once missed every state braking towards some
        # obstacle (a long PPO run), and the barrier's relative degree then read 2.
        samples = torch.as_tensor(
            np.concatenate([rng.uniform(-4, 4, (16, 4)), braking_probes(centers, reach_k)]), dtype=torch.float64
        )
        # Bound to this scene's obstacles: a ConstraintSet kept from an earlier episode stays right.
        self.constraints = ConstraintSet(
            self.model,
            barriers,
            samples,
            -self.action_bound,
            self.action_bound,
            fast_terms=partial(
                braking_terms, centers=centers, reach=reach_k, decel=decel, dt=self.dt, mass=self.model.masses
            ),
            fast_values=partial(braking_values, centers=centers, reach=reach_k, decel=decel, dt=self.dt),
            sample_margin=self.sample_margin(),
            backup=Backup(partial(brake, decel=decel, dt=self.dt, mass=self.model.masses), self.dt),
            certify_samples=128,
            state_bounds=(
                [-self.arena - 1, -self.arena - 1, -self.max_speed, -self.max_speed],
                [self.arena + 1, self.arena + 1, self.max_speed, self.max_speed],
            ),
        )

    def sample_margin(self) -> float:
        """How far (m^2 of barrier) the model's one-period prediction may be from PyBullet's.

        PyBullet integrates the two sliders in reduced coordinates with ``N`` substeps of semi-implicit
        Euler, and the model's step is that same integrator with the same per-axis masses
        (:class:`DoubleIntegrator` ``substeps``): the prediction differs by rounding only, at any speed and
        force (measured: 1e-14 m in position, 3e-15 m/s in velocity at 8 m/s and full force;
        ``tests/test_envs.py`` checks it over the state range). The margin covers 1e-9 m of position and
        1e-9 m/s of velocity: the braking path's length grows by ``(|v| / decel + dt / 2)`` per unit of
        speed, so the clearance moves by at most ``e_p + e_v (v_max / decel + dt / 2)`` at ``v_max``
        (``max_speed``; the margin is 30x that bound there) and the barrier ``d^2 - R^2`` by ``2 R`` times
        it, for the largest reach ``R``."""
        decel = self.force_limit / (self.mass + 1e-6)
        drift = 1e-9 + 1e-9 * (self.max_speed / decel + self.dt / 2)
        reach = self.obstacle_radius[1] + self.robot_radius + self.margin
        return float(30 * (2 * reach * drift + drift**2))

    def safety_state(self) -> np.ndarray:
        """``[px, py, vx, vy]``: the state of :attr:`model` and :attr:`constraints`."""
        (px, vx, *_), (py, vy, *_) = self.sim.call(p.getJointStates, self._robot, [0, 1])
        return np.array([px, py, vx, vy])

    def position(self, state: np.ndarray) -> np.ndarray:
        return state[:2].copy()

    def barrier_values(self, state: np.ndarray | None = None) -> np.ndarray:
        s = self.safety_state() if state is None else state
        assert self.constraints is not None
        return self.constraints.values_numpy(s[None])[0]

    def clearance(self, state: np.ndarray | None = None) -> np.ndarray:
        """Each obstacle's clearance ``|p - c| - R`` (m) from the robot's position (< 0: inside its margin)."""
        s = self.safety_state() if state is None else state
        reach = self.obstacles[:, 2] + self.robot_radius + self.margin
        return np.sqrt(((s[:2] - self.obstacles[:, :2]) ** 2).sum(1)) - reach

    def _scan(self, pos: np.ndarray) -> np.ndarray:
        origin = np.array([pos[0], pos[1], 0.1])
        inner = self.robot_radius + 1e-3
        starts = origin + self._ray_dirs * inner
        ends = origin + self._ray_dirs * self.scan_range
        hits = self.sim.call(p.rayTestBatch, starts.tolist(), ends.tolist())
        frac = np.array([h[2] if h[0] >= 0 else 1.0 for h in hits])
        return inner + frac * (self.scan_range - inner)

    def _observe(self, state: np.ndarray) -> np.ndarray:
        parts = [state[2:], self.goal - state[:2], self._scan(state[:2])]
        if self.privileged:
            padded = np.zeros((self.n_obstacles[1], 3))
            padded[: len(self.obstacles)] = self.obstacles
            parts += [state[:2], padded.ravel()]
        return np.concatenate(parts)

    def _apply(self, action: np.ndarray, push: np.ndarray | None) -> bool:
        force = action if push is None else action + push  # for the contact check's reach only
        state = self.safety_state()
        # Contact queries cost more than the physics; skip them when no obstacle can be reached this
        # period: travel <= (|v| + |a| dt) dt with |a| = |force| / mass, against the current clearance.
        clearance = (
            np.sqrt(((state[:2] - self.obstacles[:, :2]) ** 2).sum(1)) - self.obstacles[:, 2] - self.robot_radius
        )
        dt = self.step_dt
        travel = (np.linalg.norm(state[2:]) + np.linalg.norm(force) / self.mass * dt) * dt
        check = bool(clearance.min() <= travel + 0.01)
        contact = False
        for _ in range(self.physics_substeps):
            self.sim.call(p.setJointMotorControlArray, self._robot, [0, 1], p.TORQUE_CONTROL, forces=action.tolist())
            if push is not None:  # cleared by every stepSimulation
                where = self.sim.call(p.getLinkState, self._robot, 1)[0]
                push3 = [float(push[0]), float(push[1]), 0.0]
                self.sim.call(p.applyExternalForce, self._robot, 1, push3, where, p.WORLD_FRAME)
            self.sim.call(p.stepSimulation)
            if check and not contact:
                contact = len(self.sim.call(p.getContactPoints, self._robot)) > 0
        return contact

    def _task_reset(self, state: np.ndarray) -> None:
        self._distance = float(np.linalg.norm(self.goal - state[:2]))

    def _task(self, state: np.ndarray) -> tuple[float, bool, bool]:
        distance = float(np.linalg.norm(self.goal - state[:2]))
        reward = self._distance - distance  # progress towards the goal (m)
        self._distance = distance
        success = distance < self.goal_tolerance
        return reward + (self.goal_bonus if success else 0.0), success, success

    def _camera(self) -> tuple[tuple[float, float, float], float, float, float]:
        return (0.0, 0.0, 0.0), 10.0, 0.0, -89.9
