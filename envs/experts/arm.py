"""ArmReach expert: via points around the sphere, resolved-rate tracking with computed torque, the CBF filter."""

from __future__ import annotations

import numpy as np

from safeliquid.envs.arm_model import HOME
from safeliquid.envs.arm_reach import ArmReachEnv
from safeliquid.envs.experts._common import FilteredExpert
from safeliquid.safety.models import DLS_DAMPING


def _segment_clearance(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> float:
    """Distance from point ``c`` to the segment ``a``-``b``."""
    ab = b - a
    t = np.clip(np.dot(c - a, ab) / max(np.dot(ab, ab), 1e-12), 0.0, 1.0)
    return float(np.linalg.norm(a + t * ab - c))


def detour_aim(
    ee: np.ndarray, target: np.ndarray, center: np.ndarray, keep: float, via_done: bool
) -> tuple[np.ndarray, bool]:
    """Where the end effector ``ee (3,)`` should head, and the updated ``via_done``.

    While the segment to ``target`` passes within ``keep`` of ``center`` and the end effector is still on
    the start side of the sphere's midplane (normal ``target - center``), a via point ``keep + 0.08``
    from the centre, on the side the end effector is on; ``via_done`` once it is within 0.05 m of it.
    Past the midplane the detour is over however the arm got there, so a DAgger learner that overshoots
    the via point is sent on to the target, not back to the via point.
    """
    to_goal = target - center
    passed = np.dot(ee - center, to_goal) >= 0.0
    if via_done or passed or _segment_clearance(ee, target, center) >= keep:
        return target, via_done
    side = ee - center
    side = side - np.dot(side, to_goal) / max(np.dot(to_goal, to_goal), 1e-12) * to_goal
    if np.linalg.norm(side) < 1e-3:
        side = np.array([0.0, 0.0, 1.0])
    aim = center + (keep + 0.08) * side / np.linalg.norm(side)
    return aim, bool(np.linalg.norm(aim - ee) < 0.05)  # beside the sphere: from here the filter keeps clear


class ArmReachExpert(FilteredExpert):
    """While the straight line to the target passes within ``detour`` of the barrier's sphere, aim at
    a via point beside it (on the side the end effector is already on; :func:`detour_aim`); the
    desired end-effector velocity ``k (p* - p)`` (capped at ``speed``) becomes joint
    velocities by damped least squares, with a null-space pull towards the home posture,
    and joint torques by computed torque ``tau = M (k_v (qd* - qd)) + c``.

    ``gain`` (1/s) is high enough that the speed cap binds until 0.06 m from the aim, so the labels still
    say ~0.5 m/s towards the target at the 0.05 m goal tolerance. With 4 (earlier releases) they said
    0.2-0.4 m/s there, and a learner's velocity error of that size stalled it 0.05-0.15 m out.
    """

    def __init__(self, speed: float = 0.6, detour: float = 0.06, gain: float = 10.0) -> None:
        super().__init__()
        self.speed, self.detour, self.gain = speed, detour, gain
        self._via_done = False

    def reset(self, env: ArmReachEnv) -> None:
        super().reset(env)
        self._via_done = False

    def task_velocity(self, env: ArmReachEnv) -> np.ndarray:
        """The desired end-effector velocity ``(3,)`` now: ``gain (aim - ee)`` capped at ``speed``, with ``aim``
        from :func:`detour_aim` (advances the via-point latch, so call it once per control step)."""
        ee = env.end_effector()
        center, radius = env.obstacle[:3], env.obstacle[3]
        keep = radius + env.link_radius + env.margin + self.detour
        aim, self._via_done = detour_aim(ee, env.target, center, keep, self._via_done)
        v = self.gain * (aim - ee)
        return v * min(1.0, self.speed / max(np.linalg.norm(v), 1e-9))

    def reference(self, env: ArmReachEnv, state: np.ndarray) -> np.ndarray:
        q, qd = state[:7], state[7:]
        v = self.task_velocity(env)
        # the environment's model: its kinematics and dynamics equal PyBullet's to 1e-10 (tests/test_envs.py)
        jac = env.model.point_kinematics(q, qd)[1][-1]  # the end effector's linear Jacobian (3, 7)
        jjt = jac @ jac.T + DLS_DAMPING * np.eye(3)
        pinv = jac.T @ np.linalg.inv(jjt)
        qd_star = pinv @ v + (np.eye(7) - pinv @ jac) @ (1.0 * (HOME - q))
        mass, bias = env.model.dynamics_numpy(q, qd)  # M(q), c(q, q')
        return mass @ (15.0 * (qd_star - qd)) + bias
