"""ArmReach: a KUKA LBR iiwa 7-DoF arm under joint torque control reaches a target past a spherical obstacle.

The arm is pybullet_data's ``kuka_iiwa/model.urdf`` on a fixed base, velocity
motors disabled and joint damping removed, so PyBullet integrates exactly
``M(q) q'' + c(q, q') = tau``. The model (:class:`~safeliquid.envs.arm_model.KukaModel`) computes ``M`` and ``c``
and the control points' kinematics with compiled rigid-body code on the same URDF
(:mod:`~safeliquid.envs.arm_kernel`, equal to PyBullet's ``calculateMassMatrix``,
``calculateInverseDynamics`` and ``calculateJacobian`` to rounding); the barriers place
the control points with pytorch_kinematics reading the same URDF, so they are
differentiable in torch, and :func:`~safeliquid.envs.arm_terms.arm_terms` gives their HOCBF pieces in closed form
from the compiled kinematics (checked against autograd for every scene).

Constraints (state ``[q (7), q_dot (7)]``): nine control points along the arm
(upper arm, mid-upper arm, elbow, mid-elbow link, forearm, mid-forearm, wrist, elbow housing, end effector) keep
``|p - c| >= r + link_radius + margin`` from the sphere;
every joint stays inside its URDF limits (less ``joint_margin``); torques stay
within the iiwa 14 R820 ratings (176, 176, 110, 110, 110, 40, 40 N m), which are
stricter than the URDF's placeholder 300 N m.

Observation (24): ``q``, ``q_dot``, end-effector position, target minus end
effector, obstacle centre minus end effector, obstacle radius.
"""

from __future__ import annotations

from functools import cached_property, partial

import numpy as np
import pybullet as p
import torch

from safeliquid.envs._base import SafeBulletEnv
from safeliquid.envs.arm_backup import BrakeArm
from safeliquid.envs.arm_model import CONTROL_POINTS, HOME, TORQUE_LIMITS, KukaModel, load_arm
from safeliquid.envs.arm_terms import PointKinematics, arm_terms, arm_values, barriers_at
from safeliquid.safety import ConstraintSet, sphere_obstacle, state_box


class ArmReachEnv(SafeBulletEnv):
    """See the module docstring; common options in :class:`~safeliquid.envs._base.SafeBulletEnv`.

    ``link_radius``: the arm's half-thickness counted around each control point (m);
    ``margin``: extra clearance (m); ``joint_margin``: rad kept from the URDF limits.
    ``certified`` (default): the constraint set's certified set is the arm-braking backup's implicit safe set
    (:mod:`safeliquid.envs.arm_backup`; control invariant under the torque ratings, one compiled rollout of the
    model per control step); ``False``: the HOCBF set alone, which is not (construction warns).
    """

    dt = 0.02
    physics_substeps = 4  # 200 Hz physics under a 50 Hz controller
    disturbance_scale, disturbance_dim, disturbance_point = 20.0, 3, "the end effector (control point ee)"
    disturbance_matched = False  # a force at the end effector is J^T F in joint torques: posture dependent
    goal_tolerance = 0.05
    goal_offset_obs = 17  # where ``target - ee`` (3,) starts in the observation (``train --goal-gain``)
    # Default HOCBF gains (a learned policy brings its own). The obstacle barrier is in m^2, so its
    # gains are large enough to let the arm approach at a useful speed.
    obstacle_gains = (8.0, 8.0)
    joint_gains = (4.0, 4.0)

    def __init__(
        self,
        render_mode: str | None = None,
        link_radius: float = 0.09,
        margin: float = 0.03,
        joint_margin: float = 0.05,
        certified: bool = True,
        **options: float,
    ) -> None:
        self.link_radius, self.margin, self.joint_margin = link_radius, margin, joint_margin
        self.certified = bool(certified)
        super().__init__(TORQUE_LIMITS, 24, render_mode, **options)  # type: ignore[arg-type]
        self._robot = -1
        self._points_cache: np.ndarray | None = None
        self.target = np.zeros(3)
        self.obstacle = np.zeros(4)  # cx, cy, cz, r

    @cached_property
    def kinematics(self) -> PointKinematics:
        return PointKinematics()

    def _points_now(self) -> np.ndarray:
        """Control points ``(P, 3)`` at the arm's joint positions (cached until the arm moves): the model's
        kinematics, which the barrier values reported and the safety layer's predictions thus share exactly."""
        if self._points_cache is None:
            self._points_cache = self.model.points(self.safety_state()[:7])
        return self._points_cache

    def _set_q(self, q: np.ndarray) -> None:
        self._points_cache = None
        for j in range(7):
            self.sim.call(p.resetJointState, self._robot, j, float(q[j]), 0.0)

    def _build(self) -> None:
        sim, rng = self.sim, self.np_random
        scale = self._mass_scale()
        self._points_cache = None
        self._robot, self.q_low, self.q_high = load_arm(sim, scale)
        self.model = KukaModel(scale, substeps=self.physics_substeps)
        reach = self.link_radius + self.margin
        while True:  # a start, a target and a sphere in between that clears both poses
            q_start = HOME + rng.uniform(-0.2, 0.2, 7)
            q_goal = HOME + np.concatenate([rng.uniform(-1.0, 1.0, 4), rng.uniform(-0.5, 0.5, 3)])
            self._set_q(q_goal)
            goal_points = self._points_now()
            self._set_q(q_start)
            start_points = self._points_now()
            if np.linalg.norm(goal_points[-1] - start_points[-1]) < 0.3 or goal_points[-1, 2] < 0.2:
                continue
            radius = rng.uniform(0.05, 0.1)
            center = 0.5 * (goal_points[-1] + start_points[-1]) + rng.normal(0.0, 0.03, 3)
            clear = radius + reach + 0.05
            if (
                min(
                    np.linalg.norm(start_points - center, axis=1).min(),
                    np.linalg.norm(goal_points - center, axis=1).min(),
                )
                > clear
            ):
                break
        self.target, self.obstacle = goal_points[-1], np.array([*center, radius])
        shape = sim.call(p.createCollisionShape, p.GEOM_SPHERE, radius=float(radius))
        vis = sim.call(p.createVisualShape, p.GEOM_SPHERE, radius=float(radius), rgbaColor=[0.8, 0.3, 0.2, 1])
        self._obstacle_id = sim.call(p.createMultiBody, 0.0, shape, vis, basePosition=center.tolist())
        marker = sim.call(p.createVisualShape, p.GEOM_SPHERE, radius=0.03, rgbaColor=[0.1, 0.8, 0.2, 1])
        sim.call(p.createMultiBody, 0.0, -1, marker, basePosition=self.target.tolist())
        barriers = sphere_obstacle(
            "obstacle",
            self.kinematics,
            center,
            radius + self.link_radius,
            self.margin,
            count=len(CONTROL_POINTS),
            gains=self.obstacle_gains,
        )
        for barrier, name in zip(barriers, CONTROL_POINTS, strict=True):
            barrier.name = f"obstacle/{name}"
        for j in range(7):
            lo, hi = self.q_low[j] + self.joint_margin, self.q_high[j] - self.joint_margin
            barriers += state_box(f"joint{j + 1}", j, lo, hi, gains=self.joint_gains)
        samples = torch.as_tensor(np.concatenate([q_start, np.zeros(7)])[None] + rng.normal(0, 0.1, (4, 14)))
        # The closed-form terms agree with pytorch_kinematics' autograd to ~1e-6 in L_f^2 h (its float32-free
        # chain in float64 still differs in rounding): hence the looser check (the analytical-backward bug that
        # PointKinematics works around was off by 5e-4 on these samples).
        scene = {
            "model": self.model,
            "center": center.copy(),
            "reach": float(radius + reach),
            "low": self.q_low + self.joint_margin,
            "high": self.q_high - self.joint_margin,
        }
        self.constraints = ConstraintSet(
            self.model, barriers, samples, -self.action_bound, self.action_bound,
            fast_terms=partial(arm_terms, **scene), fast_values=partial(arm_values, **scene),
            sample_margin=self.sample_margin(), fast_terms_tol=(1e-5, 1e-5),
            backup=BrakeArm(
                self.model, self.action_bound, self.dt, center, scene["reach"], scene["low"], scene["high"],
            ).backup() if self.certified else None,
            # Joint ranges and speeds a torque-saturating agent reaches; few samples (at every reset): a weak test
            # here, see docs/safety.md.
            state_bounds=(np.r_[self.q_low, -6.0 * np.ones(7)], np.r_[self.q_high, 6.0 * np.ones(7)]),
            certify_samples=8,
        )  # fmt: skip

    @staticmethod
    def sample_margin() -> float:
        """How far (barrier units: m^2 for the sphere, rad for the joints) the model's one-period prediction
        may be from PyBullet's. :class:`KukaModel` computes ``M(q)`` and ``c(q, q')`` from the same URDF,
        masses and armature (equal to PyBullet's to 1e-15) and integrates them by the simulator's
        ``physics_substeps`` of semi-implicit Euler, and the barrier values the environment reports place the
        control points with the model's own kinematics from PyBullet's joint positions: the prediction matches
        to rounding at any speed (``tests/test_envs.py`` checks it at |q'| <= 6 rad/s and full torque). The
        margin, 1e-7, is orders of magnitude above that rounding."""
        return 1e-7

    def safety_state(self) -> np.ndarray:
        """``[q (7), q_dot (7)]``: the state of :attr:`model` and :attr:`constraints`."""
        states = self.sim.call(p.getJointStates, self._robot, list(range(7)))
        return np.array([s[0] for s in states] + [s[1] for s in states])

    def barrier_values(self, state: np.ndarray | None = None) -> np.ndarray:
        if state is not None and not np.array_equal(state, self.safety_state()):
            raise ValueError("ArmReach evaluates barriers at the current state only (PyBullet places the points)")
        q = self.safety_state()[:7] if state is None else state[:7]
        reach = self.obstacle[3] + self.link_radius + self.margin
        lo, hi = self.q_low + self.joint_margin, self.q_high - self.joint_margin
        return barriers_at(self._points_now(), q, self.obstacle[:3], reach, lo, hi)

    def end_effector(self) -> np.ndarray:
        return self._points_now()[-1]

    def position(self, state: np.ndarray) -> np.ndarray:
        return self.end_effector().copy()

    def _observe(self, state: np.ndarray) -> np.ndarray:
        ee = self.end_effector()
        return np.concatenate([state, ee, self.target - ee, self.obstacle[:3] - ee, self.obstacle[3:]])

    def _apply(self, action: np.ndarray, push: np.ndarray | None) -> bool:
        self._points_cache = None
        tau = action.tolist()
        contact = False
        for _ in range(self.physics_substeps):
            self.sim.call(p.setJointMotorControlArray, self._robot, list(range(7)), p.TORQUE_CONTROL, forces=tau)
            if push is not None:  # at the end effector, cleared by every stepSimulation
                where = self.model.points(self.safety_state()[:7])[-1].tolist()
                link = CONTROL_POINTS["ee"][0]
                self.sim.call(p.applyExternalForce, self._robot, link, push.tolist(), where, p.WORLD_FRAME)
            self.sim.call(p.stepSimulation)
            contact = contact or len(self.sim.call(p.getContactPoints, self._robot, self._obstacle_id)) > 0
        return contact

    def _task_reset(self, state: np.ndarray) -> None:
        self._distance = float(np.linalg.norm(self.target - self.end_effector()))

    def _task(self, state: np.ndarray) -> tuple[float, bool, bool]:
        distance = float(np.linalg.norm(self.target - self.end_effector()))
        reward = self._distance - distance
        self._distance = distance
        success = distance < self.goal_tolerance
        return reward, success, success

    def _camera(self) -> tuple[tuple[float, float, float], float, float, float]:
        return (0.35, 0.0, 0.45), 1.5, 70.0, -20.0
