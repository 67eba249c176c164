"""ArmReach: a KUKA LBR iiwa 7-DoF arm under joint torque control reaches a target past a spherical obstacle.

The arm is pybullet_data's ``kuka_iiwa/model.urdf`` on a fixed base, velocity
motors disabled and joint damping removed, so PyBullet integrates exactly
``M(q) q'' + c(q, q') = tau``. The model (:class:`KukaModel`) computes ``M`` and ``c``
and the control points' kinematics with compiled rigid-body code on the same URDF
(:mod:`~safeliquid.envs.arm_kernel`, equal to PyBullet's ``calculateMassMatrix``,
``calculateInverseDynamics`` and ``calculateJacobian`` to rounding); the barriers place
the control points with pytorch_kinematics reading the same URDF, so they are
differentiable in torch, and :func:`arm_terms` gives their HOCBF pieces in closed form
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

import os
from functools import cache, cached_property, partial
from typing import Any

import numpy as np
import pybullet as p
import pybullet_data
import torch
from torch import Tensor

from safeliquid.envs import arm_kernel
from safeliquid.envs._base import SafeBulletEnv
from safeliquid.envs._sim import BulletSim
from safeliquid.envs.arm_backup import BrakeArm
from safeliquid.envs.arm_kernel import ARMATURE_WEIGHTS, ArmParameters
from safeliquid.safety import ConstraintSet, Manipulator, sphere_obstacle, state_box

URDF = "kuka_iiwa/model.urdf"
TORQUE_LIMITS = np.array([176.0, 176.0, 110.0, 110.0, 110.0, 40.0, 40.0])
# Control points: (link index, offset in the link frame). Link i is moved by joint i (0-based).
# Spaced <= 0.22 m along the upper arm and <= 0.11 m from the elbow on (links 3 and 4: the widest
# housings), so that with ``link_radius`` 0.09 and ``margin`` 0.03 the sphere cannot touch a link between
# two points without first breaking a barrier. 200 expert episodes never did; but without
# ``elbow_mid`` a learned policy touched the sphere with link 3 with every barrier >= 0 (seed 1,000,005
# of the velocity-prior run in docs/training.md), and with it none of its first 20 evaluation episodes did. Likewise
# ``upper_arm_mid``: a task-prior policy touched the sphere with link 3 between ``upper_arm`` and ``elbow``
# (0.2155 m apart) with every barrier >= 0 (held-out seed 2,000,029, steps 190-192, 2.5 mm deep).
CONTROL_POINTS = {
    "upper_arm": (2, (0.0, 0.0, 0.0)),
    "upper_arm_mid": (2, (0.0, 0.0, 0.10775)),  # halfway to the elbow joint (z = 0.2155 in link 3's frame)
    "elbow": (3, (0.0, 0.0, 0.0)),
    "elbow_mid": (3, (0.0, 0.0923, 0.0)),  # halfway to the forearm joint (y = 0.1845 in link 3's frame)
    "forearm": (4, (0.0, 0.0, 0.0)),
    "forearm_mid": (4, (0.0, 0.0, 0.1077)),  # halfway to the wrist: link 5's housing is the bulkiest
    "wrist": (5, (0.0, 0.0, 0.0)),
    # Off the chain: link 3's housing along its z axis, 0.118 m from ``elbow`` and ``elbow_mid`` (beyond the
    # radius; within radius + margin, so a barrier at h = 0 could touch): the tangent adversary touched the
    # sphere there with every barrier >= 0 (bench_adversarial, 2026-12-01). With it, every vertex of link 3's
    # mesh is within 0.089 m of a point.
    "elbow_housing": (3, (0.0, 0.02, 0.09)),
    "ee": (6, (0.0, 0.0, 0.1)),  # last: code reads the end effector as the last point
}
# Reflected rotor inertia (kg m^2) added about each joint axis, as a MuJoCo ``armature``: the URDF
# has none, which leaves the wrist (0.001 kg m^2) accelerating at 40,000 rad/s^2 under its 40 N m.
ARMATURE = 0.1
HOME = np.array([0.0, 0.6, 0.0, -1.3, 0.0, 1.0, 0.0])


_LINKS = [link for link, _ in CONTROL_POINTS.values()]
_OFFSETS = np.array([off for _, off in CONTROL_POINTS.values()])


def control_points(sim: BulletSim, body: int) -> np.ndarray:
    """:data:`CONTROL_POINTS` ``(P, 3)`` at the arm's current joint positions, from PyBullet's link frames."""
    states = sim.call(p.getLinkStates, body, _LINKS, computeForwardKinematics=True)
    out = []
    for (_, _, _, _, pos, orn, *_), off in zip(states, _OFFSETS, strict=True):
        rot = np.array(sim.call(p.getMatrixFromQuaternion, orn)).reshape(3, 3)
        out.append(np.array(pos) + rot @ off)
    return np.array(out)


def point_jacobians(sim: BulletSim, body: int, q: np.ndarray, names: list[str] | None = None) -> np.ndarray:
    """Linear Jacobians ``(P, 3, 7)`` of the named :data:`CONTROL_POINTS` (default all) at ``q (7,)``."""
    zero = [0.0] * 7
    points = [CONTROL_POINTS[n] for n in (names or CONTROL_POINTS)]
    return np.array(
        [sim.call(p.calculateJacobian, body, link, list(off), list(map(float, q)), zero, zero)[0]
         for link, off in points]
    )  # fmt: skip


def load_arm(sim: BulletSim, mass_scale: float = 1.0) -> tuple[int, np.ndarray, np.ndarray]:
    """Load the iiwa into ``sim`` ready for torque control; return ``(body, q_low, q_high)``."""
    body = sim.call(p.loadURDF, URDF, useFixedBase=True, flags=p.URDF_USE_INERTIA_FROM_FILE)
    low, high = [], []
    for j in range(7):
        info = sim.call(p.getJointInfo, body, j)
        low.append(info[8])
        high.append(info[9])
        mass, _, (ixx, iyy, izz) = sim.call(p.getDynamicsInfo, body, j)[:3]
        sim.call(
            p.changeDynamics,
            body,
            j,
            mass=mass * mass_scale,
            # A thin-disc rotor on the joint axis (z): ARMATURE about z, half of it about x and y.
            localInertiaDiagonal=[
                i * mass_scale + ARMATURE * w for i, w in zip((ixx, iyy, izz), ARMATURE_WEIGHTS, strict=True)
            ],
            linearDamping=0.0,
            angularDamping=0.0,
            jointDamping=0.0,
        )
        sim.call(p.setJointMotorControl2, body, j, p.VELOCITY_CONTROL, force=0.0)
    return body, np.array(low), np.array(high)


@cache
def _urdf_text() -> str:
    with open(os.path.join(pybullet_data.getDataPath(), URDF)) as fh:
        return fh.read()


_LINK_INDEX = np.array(_LINKS, dtype=np.int64)
_GRAVITY = (0.0, 0.0, -9.81)  # BulletSim.reset's


class KukaModel(Manipulator):
    """The iiwa's ``M(q)`` and ``c(q, q')`` (``(B, 7, 7)`` and ``(B, 7)``) and its control points' kinematics.

    Compiled rigid-body dynamics and kinematics (:mod:`safeliquid.envs.arm_kernel`) on the URDF's
    parameters as :func:`load_arm` changes them (``mass_scale``, the armature): equal to PyBullet's
    ``calculateMassMatrix`` and ``calculateInverseDynamics`` to 1e-15 (tests/test_envs.py), without a PyBullet
    client, so the model pickles (vector envs) and costs microseconds per call.
    """

    def __init__(self, mass_scale: float = 1.0, substeps: int | None = None) -> None:
        self.mass_scale = mass_scale
        self.parameters = ArmParameters.from_urdf(_urdf_text(), mass_scale, ARMATURE, _GRAVITY)
        self.chain = self.parameters.arrays()  # what the compiled functions take
        self.point_chain = (_LINK_INDEX, _OFFSETS, *self.chain)  # the same, led by the control points'
        super().__init__(7, self._mass_matrix_of, self._bias_of, self._jacobian_of, task_dim=3, substeps=substeps)

    def __getstate__(self) -> dict:
        return {"mass_scale": self.mass_scale, "substeps": self.substeps}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["mass_scale"], state.get("substeps"))  # type: ignore[misc]

    def dynamics_numpy(self, q: np.ndarray, qd: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``M(q) (7, 7)`` and ``c(q, q') (7,)`` at one state, numpy."""
        return arm_kernel.dynamics(np.asarray(q, np.float64), np.asarray(qd, np.float64), *self.chain)

    def step_numpy(self, x: np.ndarray, u: np.ndarray, dt: float) -> np.ndarray:
        """:meth:`step` in numpy, without torch: ``substeps`` of semi-implicit Euler (PyBullet's), compiled.
        ``x (B, 14)``, ``u (B, 7)`` -> ``(B, 14)``."""
        if self.substeps is None:
            return super().step_numpy(x, u, dt)
        x, u = np.ascontiguousarray(x, np.float64), np.ascontiguousarray(u, np.float64)
        return arm_kernel.step(x, u, float(dt), self.substeps, *self.chain)

    def _mass_matrix_of(self, q: Tensor) -> Tensor:
        zero = np.zeros(7)
        rows = [self.dynamics_numpy(qi, zero)[0] for qi in q.detach().double().numpy()]
        return torch.tensor(np.array(rows), dtype=q.dtype)

    def _jacobian_of(self, q: Tensor) -> Tensor:
        """The end effector's (control point ``ee``) linear velocity Jacobian ``(B, 3, 7)``."""
        zero = np.zeros(7)
        rows = [self.point_kinematics(qi, zero)[1][-1] for qi in q.detach().double().numpy()]
        return torch.tensor(np.array(rows), dtype=q.dtype)

    def points(self, q: np.ndarray) -> np.ndarray:
        """The :data:`CONTROL_POINTS` ``(P, 3)`` at ``q (7,)``."""
        joint_rot, joint_pos = self.chain[:2]
        return arm_kernel.points(np.asarray(q, np.float64), joint_rot, joint_pos, _LINK_INDEX, _OFFSETS)

    def point_kinematics(self, q: np.ndarray, qd: np.ndarray) -> tuple[np.ndarray, ...]:
        """The :data:`CONTROL_POINTS` at one state ``q, qd (7,)``: positions ``(P, 3)``, linear Jacobians
        ``(P, 3, 7)`` and ``J' q' (P, 3)`` (the points' acceleration at zero joint acceleration), closed form."""
        joint_rot, joint_pos, axis = self.chain[:3]
        q, qd = np.asarray(q, np.float64), np.asarray(qd, np.float64)
        return arm_kernel.point_kinematics(q, qd, joint_rot, joint_pos, axis, _LINK_INDEX, _OFFSETS)

    def _bias_of(self, q: Tensor, qd: Tensor) -> Tensor:
        rows = [
            self.dynamics_numpy(qi, qdi)[1]
            for qi, qdi in zip(q.detach().double().numpy(), qd.detach().double().numpy(), strict=True)
        ]
        return torch.tensor(np.array(rows), dtype=q.dtype)


def warmup() -> None:
    """Compile (or load from numba's cache) the model's compiled entries on the arm's own shapes (``make``
    calls it through :func:`safeliquid.envs.warmup`)."""
    model = KukaModel(1.0, substeps=2)
    q = np.zeros(7)
    model.step_numpy(np.zeros((1, 14)), np.zeros((1, 7)), 0.02)  # also dynamics, through the step
    model.dynamics_numpy(q, q)
    arm_terms(np.zeros((1, 14)), model, np.ones(3), 0.1, -np.ones(7), np.ones(7))  # kinematics and terms
    arm_values(np.zeros((1, 14)), model, np.ones(3), 0.1, -np.ones(7), np.ones(7))  # points and values


def arm_terms(x: Any, model: KukaModel, center: np.ndarray, reach: float, low: np.ndarray,
              high: np.ndarray) -> tuple[Any, Any]:  # fmt: skip
    """Closed-form HOCBF pieces of ArmReach's barriers (:meth:`ConstraintSet.terms` order: the sphere for
    each control point, then ``joint{j}.low/high``) at ``x (B, 14)``, a torch tensor or a numpy array (the
    same type comes back): ``A (B, P + 14, 7)``, ``L (B, P + 14, 3)`` with ``P = len(CONTROL_POINTS)``. With
    ``d = p - c`` and ``a0 = -M^-1 c(q, q')``, the sphere rows are ``h = |d|^2 - reach^2``, ``L_f h = 2 d.J q'``,
    ``L_f^2 h = 2 |J q'|^2 + 2 d.(J' q' + J a0)``, ``L_g L_f h = 2 d^T J M^-1``; a joint's are ``q - low``,
    ``q'``, ``a0`` and ``M^-1`` rows."""
    xs = x.detach().double().numpy() if isinstance(x, Tensor) else x
    A, L = arm_kernel.terms(np.ascontiguousarray(xs, np.float64), *_scene(center, reach, low, high), *model.point_chain)
    if isinstance(x, Tensor):
        return torch.from_numpy(A).to(x.dtype), torch.from_numpy(L).to(x.dtype)
    return A, L


def arm_values(x: np.ndarray, model: KukaModel, center: np.ndarray, reach: float, low: np.ndarray,
               high: np.ndarray) -> np.ndarray:  # fmt: skip
    """ArmReach's barrier values ``(B, P + 14)`` at ``x (B, 14)`` (numpy; :func:`arm_terms` order): only the
    control points' positions, not the Jacobians the terms need."""
    scene = _scene(center, reach, low, high)
    return arm_kernel.values(np.ascontiguousarray(x, np.float64), *scene, *model.point_chain[:4])


def _scene(center: np.ndarray, reach: float, low: np.ndarray, high: np.ndarray) -> tuple:
    """The scene's arguments as the compiled functions take them (float64 arrays, a float reach)."""
    f64 = np.float64
    return np.asarray(center, f64), float(reach), np.asarray(low, f64), np.asarray(high, f64)


def barriers_at(points: np.ndarray, q: np.ndarray, center: np.ndarray, reach: float, low: np.ndarray,
                high: np.ndarray) -> np.ndarray:  # fmt: skip
    """ArmReach's barrier values ``(P + 14,)`` from the control points ``(P, 3)`` and the joints ``q (7,)``: the
    sphere's for each point, then ``joint1.low``, ``joint1.high``, ``joint2.low``, ..."""
    return arm_kernel.barrier_values(
        np.asarray(q, np.float64), np.asarray(points, np.float64), np.asarray(center, np.float64), float(reach),
        np.asarray(low, np.float64), np.asarray(high, np.float64),
    )  # fmt: skip


class _Kinematics:
    """Control-point positions ``(B, n) -> (B, P, 3)`` (:data:`CONTROL_POINTS` order) with pytorch_kinematics.

    The last result is reused while called again on the very same tensor (every
    point barrier of one ``ConstraintSet.rows`` call reads one forward kinematics).
    """

    def __init__(self) -> None:
        import pytorch_kinematics as pk

        with open(os.path.join(pybullet_data.getDataPath(), URDF), "rb") as fh:
            self.chain = pk.build_serial_chain_from_urdf(fh.read(), "lbr_iiwa_link_7").to(dtype=torch.float64)
        self.frames = [f"lbr_iiwa_link_{link + 1}" for link, _ in CONTROL_POINTS.values()]
        self.offsets = torch.tensor([off for _, off in CONTROL_POINTS.values()], dtype=torch.float64)

        self._last: tuple[Tensor, int, Tensor] | None = None

    def __call__(self, x: Tensor) -> Tensor:
        if self._last is not None and self._last[0] is x and self._last[1] == x._version:
            return self._last[2]
        out = self._compute(x)
        self._last = (x, x._version, out)
        return out

    def _compute(self, x: Tensor) -> Tensor:
        chain = self.chain.to(dtype=x.dtype)
        # analytical_grad=False: pytorch_kinematics' default backward (a custom autograd Function) is not
        # differentiable again, so the second Lie derivative would silently lose every term through the
        # Jacobian's dependence on q (|J q'|^2 and d.J' q'): the HOCBF rows need plain autograd.
        frames = chain.forward_kinematics_tensor(x[:, :7], analytical_grad=False)  # (frames, B, 4, 4)
        points = []
        for name, off in zip(self.frames, self.offsets.to(x), strict=True):
            m = frames[chain.frame_to_idx[name]]  # (B, 4, 4)
            points.append(m[:, :3, 3] + m[:, :3, :3] @ off)
        return torch.stack(points, 1)


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
    def kinematics(self) -> _Kinematics:
        return _Kinematics()

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
        # _Kinematics works around was off by 5e-4 on these samples).
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
