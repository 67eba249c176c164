"""ArmReach's backup controller, brake the arm (the end effector in a straight line) and hold it, and its
implicit safe set, compiled.

The arm's position HOCBFs with fixed gains are not control invariant under the torque ratings: at several
rad/s the coupled arm cannot brake every joint at once, and a braking-distance barrier per joint did worse
(NOTES.md). The backup instead brakes the arm: at each sample it asks, through the computed torque
``c(q, q') + M(q) q''`` clipped to the ratings, for the end effector to decelerate along its own velocity,
``a = -rate v`` (at most ``decel`` in size; a straight path, which stays outside a sphere it is tangent to:
the shipped policy rides the sphere's barrier at h ~ 0, and braking every joint alike bent the end
effector's path into it), and for the null space's joints ``q'' = -clip(rate q', -decel, decel)``:

    q'' = J^+ (a - J' q') + (I - J^+ J) q''_joint,    J^+ = J' (J J' + damping I)^-1.

Near rest the two are ``q'' = -rate q'`` up to a term second order in ``q'``, and that law holds the arm
against gravity. A joint that would reach its bound within the period at its current speed reverses instead
(``q'' = -2 q' / dt``): a policy creeping into a joint limit under the HOCBF arrives with a speed the
geometric decay cannot stop in the room left.
Its terminal set is the arm nearly at rest (``|q'| <= rest_speed``) whose stopping posture under the
decay, ``q + q' / rate``, keeps every joint ``rest_room`` inside its bounds and every sphere barrier at
least ``rest_clearance`` (the travel there is a fraction of a milliradian, over which the barriers are
linear to 1e-7), with the gravity torque within 90 % of the ratings, so that holding is unsaturated. The
implicit safe set (:mod:`safeliquid.safety.backup_set`) is the states from which the braking rollout keeps
every barrier and reaches that set. The law, the terminal test and the whole rollout test are compiled
(numba) on the model's kinematics and dynamics (:mod:`~safeliquid.envs.arm_kernel`); the generic rollout,
which calls the same law and terminal test one period at a time, gives the same answers (a test).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from numba import njit

from safeliquid.envs import arm_kernel
from safeliquid.safety import Backup

if TYPE_CHECKING:
    from safeliquid.envs.arm_model import KukaModel

_JIT = {"cache": True, "error_model": "numpy"}


@njit(**_JIT)
def _torque(
    q: np.ndarray, qd: np.ndarray, M: np.ndarray, c: np.ndarray, J: np.ndarray, jdot: np.ndarray, law: np.ndarray,
    limit: np.ndarray, low: np.ndarray, high: np.ndarray,
) -> np.ndarray:  # fmt: skip
    """The braking torque ``(7,)`` at ``q, qd (7,)`` from ``M (7, 7)``, ``c (7,)`` and the end effector's
    ``J (3, 7)`` and ``J' q' (3,)``; ``law = [dt, rate, decel, damping]``."""
    dt, rate, decel, damping = law[0], law[1], law[2], law[3]
    n = q.shape[0]
    joint = np.empty(n)
    for j in range(n):
        joint[j] = -min(max(rate * qd[j], -decel), decel)
    a = -rate * arm_kernel.matvec(J, qd)
    size = np.sqrt(arm_kernel.dot(a, a))
    if size > decel:
        a *= decel / size
    # q'' = J^+ (a - J'q') + (I - J^+ J) joint = joint + J' (J J' + damping I)^-1 (a - J'q' - J joint)
    gram = np.empty((3, 3))
    for r in range(3):
        for k in range(3):
            gram[r, k] = arm_kernel.dot(J[r], J[k])
    for r in range(3):
        gram[r, r] += damping
    qdd = joint + arm_kernel.matvec(J.T, arm_kernel.solve_spd(gram, a - jdot - arm_kernel.matvec(J, joint)))
    for j in range(n):
        # A joint that would reach its bound within the period at its speed reverses instead: the period's
        # constant deceleration that ends at -q' travels at most h |q'| / 2 towards the bound (one of the
        # substeps h), where the geometric decay above would travel about |q'| dt.
        room = high[j] - q[j] if qd[j] > 0 else q[j] - low[j]
        if room < abs(qd[j]) * dt:
            qdd[j] = -2.0 * qd[j] / dt
    u = c + arm_kernel.matvec(M, qdd)
    for j in range(n):
        u[j] = min(max(u[j], -limit[j]), limit[j])
    return u


@njit(**_JIT)
def _control(
    x: np.ndarray, law: np.ndarray, limit: np.ndarray, low: np.ndarray, high: np.ndarray, links: np.ndarray,
    offsets: np.ndarray, joint_rot: np.ndarray, joint_pos: np.ndarray, axis: np.ndarray, mass: np.ndarray,
    com: np.ndarray, inertia: np.ndarray, gravity: np.ndarray,
) -> np.ndarray:  # fmt: skip
    """The braking torques ``(B, 7)`` at ``x (B, 14)``."""
    n = limit.shape[0]
    out = np.empty((x.shape[0], n))
    for b in range(x.shape[0]):
        q, qd = x[b, :n], x[b, n:]
        M, c = arm_kernel.dynamics(q, qd, joint_rot, joint_pos, axis, mass, com, inertia, gravity)
        _, J, jdot = arm_kernel.point_kinematics(q, qd, joint_rot, joint_pos, axis, links[-1:], offsets[-1:])
        out[b] = _torque(q, qd, M, c, J[0], jdot[0], law, limit, low, high)
    return out


@njit(**_JIT)
def _terminal(
    x: np.ndarray, rest: np.ndarray, limit: np.ndarray, center: np.ndarray, reach: float, low: np.ndarray,
    high: np.ndarray, links: np.ndarray, offsets: np.ndarray, joint_rot: np.ndarray, joint_pos: np.ndarray,
    axis: np.ndarray, mass: np.ndarray, com: np.ndarray, inertia: np.ndarray, gravity: np.ndarray,
) -> bool:  # fmt: skip
    """Is ``x (14,)`` in the terminal set? ``rest = [rate, rest_speed, rest_room, rest_clearance]``."""
    rate, speed, room, clearance = rest[0], rest[1], rest[2], rest[3]
    n = limit.shape[0]
    stop = np.empty(n)
    for j in range(n):
        if abs(x[n + j]) > speed:
            return False
        stop[j] = x[j] + x[n + j] / rate
        if stop[j] < low[j] + room or stop[j] > high[j] - room:
            return False
    # the kinematics and the gravity only where the cheap tests pass
    pts = arm_kernel.points(stop, joint_rot, joint_pos, links, offsets)
    h = arm_kernel.barrier_values(stop, pts, center, reach, low, high)
    for k in range(pts.shape[0]):
        if h[k] < clearance:
            return False
    _, c = arm_kernel.dynamics(stop, np.zeros(n), joint_rot, joint_pos, axis, mass, com, inertia, gravity)
    for j in range(n):
        if abs(c[j]) > 0.9 * limit[j]:
            return False
    return True


@njit(**_JIT)
def _keeps(
    states: np.ndarray, horizon: int, substeps: int, margin: float, law: np.ndarray, rest: np.ndarray,
    limit: np.ndarray, center: np.ndarray, reach: float, low: np.ndarray, high: np.ndarray, links: np.ndarray,
    offsets: np.ndarray, joint_rot: np.ndarray, joint_pos: np.ndarray, axis: np.ndarray, mass: np.ndarray,
    com: np.ndarray, inertia: np.ndarray, gravity: np.ndarray,
) -> np.ndarray:  # fmt: skip
    """The rollout test of :func:`safeliquid.safety.backup_set.rollout` for the arm, ``(B,)`` bool over
    ``states (B, 14)``: every sample up to the first terminal one keeps every barrier ``>= margin``, and a
    terminal one comes within ``horizon`` periods of the braking law, each ``substeps`` of the model's step."""
    n = limit.shape[0]
    out = np.zeros(states.shape[0], dtype=np.bool_)
    h = law[0] / substeps
    ee_links, ee_offsets = links[-1:], offsets[-1:]
    for b in range(states.shape[0]):
        x = states[b].copy()
        for period in range(horizon + 1):
            q, qd = x[:n], x[n:]
            pts = arm_kernel.points(q, joint_rot, joint_pos, links, offsets)
            if arm_kernel.barrier_values(q, pts, center, reach, low, high).min() < margin:
                break
            if _terminal(x, rest, limit, center, reach, low, high, links, offsets, joint_rot, joint_pos, axis,
                         mass, com, inertia, gravity):  # fmt: skip
                out[b] = True
                break
            if period == horizon:
                break
            M, c = arm_kernel.dynamics(q, qd, joint_rot, joint_pos, axis, mass, com, inertia, gravity)
            _, J, jdot = arm_kernel.point_kinematics(q, qd, joint_rot, joint_pos, axis, ee_links, ee_offsets)
            u = _torque(q, qd, M, c, J[0], jdot[0], law, limit, low, high)
            for s in range(substeps):
                if s:  # the first substep's M and c are the law's
                    M, c = arm_kernel.dynamics(q, qd, joint_rot, joint_pos, axis, mass, com, inertia, gravity)
                qdd = arm_kernel.solve_spd(M, u - c)
                for j in range(n):
                    x[n + j] += h * qdd[j]
                    x[j] += h * x[n + j]
    return out


@dataclass(frozen=True)
class BrakeArm:
    """The backup of a :class:`KukaModel` under ``|tau| <= torque_limit (7,)`` held ``dt`` seconds, in the
    scene whose sphere barriers are ``|p - center|^2 - reach^2`` (``center (3,)``) over the model's control
    points and whose joint barriers keep ``low <= q <= high`` (``(7,)`` each), as :func:`arm_values`.
    ``rate`` (1/s), ``decel`` (rad/s^2 per joint, m/s^2 for the end effector) and ``damping`` (of the end
    effector's damped least-squares inverse): the braking law; ``rest_*``: the terminal set (module
    docstring); ``horizon`` (periods) and ``margin``: the rollout's; ``clearance``: what the layer's QP keeps
    above the model's margin for the braking's room (:class:`~safeliquid.safety.Backup`: 1e-4 m^2 is about
    0.2 mm at the sphere's reach; with 1e-7 the shipped policy stalled on 2 of 200 held-out episodes, with its
    forearm on the sphere)."""

    model: KukaModel
    torque_limit: np.ndarray
    dt: float
    center: np.ndarray
    reach: float
    low: np.ndarray
    high: np.ndarray
    rate: float = 50.0
    decel: float = 100.0
    damping: float = 1e-4
    rest_speed: float = 0.01
    rest_room: float = 1e-7
    rest_clearance: float = 1e-7
    horizon: int = 25
    margin: float = 1e-7
    clearance: float = 1e-4

    def __post_init__(self) -> None:
        arrays = {k: np.ascontiguousarray(getattr(self, k), dtype=np.float64)
                  for k in ("torque_limit", "center", "low", "high")}  # fmt: skip
        for key, value in arrays.items():
            object.__setattr__(self, key, value)
        object.__setattr__(self, "_law", np.array([self.dt, self.rate, self.decel, self.damping]))
        object.__setattr__(self, "_rest", np.array([self.rate, self.rest_speed, self.rest_room, self.rest_clearance]))
        scene = (self.center, float(self.reach), self.low, self.high, *self.model.point_chain)
        object.__setattr__(self, "_scene", scene)  # center, reach, low, high, links, offsets, then the chain

    def control(self, x: Any) -> Any:
        """The braking torques ``(B, 7)`` at ``x (B, 14)``, torch or numpy (the same type back)."""
        xs = x.detach().double().numpy() if isinstance(x, torch.Tensor) else x
        limits = (self.torque_limit, self.low, self.high, *self._scene[4:])
        out = _control(np.ascontiguousarray(xs, dtype=np.float64), self._law, *limits)
        return torch.from_numpy(out).to(x.dtype) if isinstance(x, torch.Tensor) else out

    def terminal(self, x: np.ndarray) -> np.ndarray:
        """``(B,)`` bool: nearly at rest; where the braking law's geometric decay stops the joints,
        ``q + q' / rate`` (it travels less), every joint ``rest_room`` inside its bounds and every sphere barrier
        at least ``rest_clearance``; and the gravity torque holdable."""
        x = np.ascontiguousarray(x, dtype=np.float64)
        return np.array([_terminal(xi, self._rest, self.torque_limit, *self._scene) for xi in x], dtype=bool)

    def keeps(self, x: np.ndarray) -> np.ndarray:
        """``(B,)`` bool: the compiled rollout test (the generic one's answers, held equal by a test)."""
        x = np.ascontiguousarray(x, dtype=np.float64)
        return _keeps(
            x, self.horizon, self.model.substeps, self.margin, self._law, self._rest, self.torque_limit, *self._scene
        )

    def backup(self) -> Backup:
        # The compiled test integrates as the model's substeps do; a model without them has only the generic one.
        keeps = self.keeps if self.model.substeps else None
        return Backup(self.control, self.dt, self.horizon, self.terminal, self.margin, keeps, self.clearance)
