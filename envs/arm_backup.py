"""ArmReach's backup controller, brake the arm (the end effector in a straight line) and hold it.

The arm's position HOCBFs with fixed gains are not control invariant under the torque ratings: at several
rad/s the coupled arm cannot brake every joint at once, and a braking-distance barrier per joint did worse
(NOTES.md). The backup instead brakes the arm: at each sample it asks, through the computed torque
``c(q, q') + M(q) q''`` clipped to the ratings, for the end effector to decelerate along its own velocity,
``a = -rate v`` (at most ``decel`` in size; a straight path, which stays outside a sphere it is tangent to:
the shipped policy rides the sphere's barrier at h ~ 0, and braking every joint alike bent the end
effector's path into it), and for the null space's joints ``q'' = -clip(rate q', -decel, decel)``. Near
rest the two are ``q'' = -rate q'`` up to a term second order in ``q'``, and that law holds the arm
against gravity. A joint that would reach its
bound within the period at its current speed reverses instead (``q'' = -2 q' / dt``): a policy creeping
into a joint limit under the HOCBF arrives with a speed the geometric decay cannot stop in the room left.
Its terminal set is the arm nearly at rest (``|q'| <= rest_speed``) whose stopping posture under the
decay, ``q + q' / rate``, keeps every joint ``rest_room`` inside its bounds and every sphere barrier at
least ``rest_clearance`` (the travel there is a fraction of a milliradian, over which the barriers are
linear to 1e-7), with the gravity torque within 90 % of the ratings, so that holding is unsaturated. The
implicit safe set (:mod:`safeliquid.safety.backup_set`) is the states from which the braking rollout keeps
every barrier and reaches that set; the generic rollout evaluates it with the model's compiled dynamics
(:mod:`~safeliquid.envs.arm_kernel`), one Python call per period.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from safeliquid.safety import Backup

if TYPE_CHECKING:
    from safeliquid.envs.arm_reach import KukaModel


@dataclass(frozen=True)
class BrakeJoints:
    """The backup of a :class:`KukaModel` under ``|tau| <= torque_limit (7,)`` held ``dt`` seconds. ``values``:
    the scene's barrier values ``x (B, 14) -> (B, K)`` (the sphere's for each control point, then the joints',
    as :func:`arm_values`); ``points``: how many sphere barriers lead them; ``low``, ``high`` ``(7,)``: the
    joint barriers' bounds. ``rate`` (1/s), ``decel`` (rad/s^2 per joint, m/s^2 for the end effector) and
    ``damping`` (of the end effector's damped least-squares inverse): the braking law; ``rest_*``: the terminal
    set (module docstring); ``horizon`` (periods) and ``margin``: the rollout's."""

    model: KukaModel
    torque_limit: np.ndarray
    dt: float
    values: Callable[[np.ndarray], np.ndarray]
    points: int
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

    def control(self, x: Any) -> Any:
        """The braking torques ``(B, 7)`` at ``x (B, 14)``, torch or numpy (the same type back)."""
        xs = x.detach().double().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, np.float64)
        out = np.empty((xs.shape[0], 7))
        for i, xi in enumerate(xs):
            q, qd = xi[:7], xi[7:]
            M, c = self.model.dynamics_numpy(q, qd)
            _, J, jdot = self.model.point_kinematics(q, qd)
            J, jdot = J[-1], jdot[-1]  # the end effector's
            # The end effector decelerates along its own velocity (a straight line: a path tangent to the
            # sphere stays outside it), the null space's joints as the joint law; near rest both are
            # q'' = -rate q' up to J^+ J' q' (second order in q').
            a = -self.rate * (J @ qd)
            a *= min(1.0, self.decel / max(float(np.linalg.norm(a)), 1e-12))
            pinv = J.T @ np.linalg.inv(J @ J.T + self.damping * np.eye(3))
            joint = -np.clip(self.rate * qd, -self.decel, self.decel)
            qdd = pinv @ (a - jdot) + joint - pinv @ (J @ joint)
            # A joint that would reach its bound within the period at its speed reverses instead: the period's
            # constant deceleration that ends at -q' travels at most h |q'| / 2 towards the bound (one of the
            # substeps h), where the geometric decay above would travel about |q'| dt.
            room = np.where(qd > 0, self.high - q, q - self.low)
            close = room < np.abs(qd) * self.dt
            qdd = np.where(close, -2.0 * qd / self.dt, qdd)
            out[i] = np.clip(c + M @ qdd, -self.torque_limit, self.torque_limit)
        return torch.from_numpy(out).to(x.dtype) if isinstance(x, torch.Tensor) else out

    def terminal(self, x: np.ndarray) -> np.ndarray:
        """``(B,)`` bool: nearly at rest; where the braking law's geometric decay stops the joints,
        ``q + q' / rate`` (it travels less), every joint ``rest_room`` inside its bounds and every sphere barrier
        at least ``rest_clearance``; and the gravity torque holdable."""
        qd = x[:, 7:]
        stop = x[:, :7] + qd / self.rate
        out = (np.abs(qd).max(1) <= self.rest_speed) & (stop >= self.low + self.rest_room).all(1)
        out &= (stop <= self.high - self.rest_room).all(1)
        for i in np.flatnonzero(out):  # the kinematics and the gravity only where the cheap tests pass
            _, gravity = self.model.dynamics_numpy(stop[i], np.zeros(7))
            clear = (self.values(np.r_[stop[i], np.zeros(7)][None])[0, : self.points] >= self.rest_clearance).all()
            out[i] = bool(clear and (np.abs(gravity) <= 0.9 * self.torque_limit).all())
        return out

    def backup(self) -> Backup:
        return Backup(self.control, self.dt, self.horizon, self.terminal, self.margin)
