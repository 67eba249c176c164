"""The KUKA LBR iiwa 7 as ArmReach simulates it: the URDF as loaded into PyBullet (masses, armature, torque
ratings), the control points along the arm, and :class:`KukaModel`, its compiled rigid-body model
(:mod:`~safeliquid.envs.arm_kernel`: ``M``, ``c`` and the points' kinematics, equal to PyBullet's to rounding)."""

from __future__ import annotations

import os
from functools import cache

import numpy as np
import pybullet as p
import pybullet_data
import torch
from torch import Tensor

from safeliquid.envs import arm_kernel
from safeliquid.envs._sim import BulletSim
from safeliquid.envs.arm_kernel import ARMATURE_WEIGHTS, ArmParameters
from safeliquid.safety import Manipulator

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
