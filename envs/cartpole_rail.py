"""CartPoleRail: swing a pole up from hanging and balance it, with the cart kept on a rail of limited length.

Cart on a prismatic joint, pole on a revolute joint, both free (no damping,
velocity motors off), driven by a bounded horizontal force on the cart. The
model is the textbook rigid-body cart-pole with the masses and the pole's inertia
read back from PyBullet: state ``[x, theta, x_dot, theta_dot]`` with
``theta = 0`` upright and positive towards ``+x``. The rail is two barriers
``x - (-rail) >= 0`` and ``rail - x >= 0`` (relative degree 2 under force
control), certified under the force limit through the implicit safe set of a brake-and-hold backup
(:mod:`safeliquid.envs.cartpole_backup`). Observation: ``[x, cos theta, sin theta, x_dot, theta_dot]``.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np
import pybullet as p
import torch
from torch import Tensor

from safeliquid.envs._base import SafeBulletEnv
from safeliquid.envs.cartpole_backup import BrakeAndHold, rail_terms_numpy, step_states
from safeliquid.safety import Certificate, ConstraintSet, ControlAffine, state_box
from safeliquid.safety.models import rk4


class CartPole(ControlAffine):
    """``M(theta) [x'', theta'']^T + c = [u, 0]^T`` with

    ``M = [[mc + mp, mp l cos], [mp l cos, I + mp l^2]]``,
    ``c = [-mp l sin theta_dot^2, -mp g l sin]``; ``l`` the pivot-to-centre-of-mass
    distance, ``I`` the pole's inertia about its centre of mass. State ``(B, 4)``, control ``(B, 1)``.
    """

    state_dim, control_dim = 4, 1

    def __init__(
        self,
        cart_mass: float,
        pole_mass: float,
        com: float,
        inertia: float,
        gravity: float = 9.81,
        substeps: int | None = None,
    ) -> None:
        self.mc, self.mp, self.l, self.inertia, self.grav = cart_mass, pole_mass, com, inertia, gravity
        self.substeps = substeps  # the sampled-data prediction integrates as PyBullet does
        self.parameters = np.array([cart_mass, pole_mass, com, inertia, gravity], dtype=np.float64)  # compiled code's

    def accelerations(self, x: Any, u: Any) -> Any:
        """``[x'', theta''] (B, 2)`` at ``x (B, 4)`` under force ``u (B,)``; torch or numpy alike."""
        xp = np if isinstance(x, np.ndarray) else torch
        th, thd = x[:, 1], x[:, 3]
        s, c = xp.sin(th), xp.cos(th)
        ml = self.mp * self.l
        a, b, d = self.mc + self.mp, ml * c, self.inertia + self.mp * self.l**2
        r1 = u + ml * s * thd**2
        r2 = ml * self.grav * s
        det = a * d - b * b
        if xp is np:  # the control loop's batch 1: fill instead of stacking
            out = np.empty((x.shape[0], 2))
            out[:, 0], out[:, 1] = (d * r1 - b * r2) / det, (a * r2 - b * r1) / det
            return out
        return xp.stack([(d * r1 - b * r2) / det, (a * r2 - b * r1) / det], 1)

    def cart_gain(self, x: Any) -> Any:
        """The cart's acceleration per newton, ``d / det`` ``(B,)`` (torch or numpy): ``g``'s ``x''`` entry."""
        xp = np if isinstance(x, np.ndarray) else torch
        b, a, d = self.mp * self.l * xp.cos(x[:, 1]), self.mc + self.mp, self.inertia + self.mp * self.l**2
        return d / (a * d - b * b)

    def f(self, x: Tensor) -> Tensor:
        return torch.cat([x[:, 2:], self.accelerations(x, x.new_zeros(x.shape[0]))], 1)

    def step_numpy(self, x: np.ndarray, u: np.ndarray, dt: float) -> np.ndarray:
        """:meth:`step` in numpy (the same integrator on the same accelerations): the control loop's path.
        The semi-implicit substeps (velocity, then position) compiled: :func:`cartpole_backup.step_states`."""
        if self.substeps is None:
            return rk4(lambda s, f: np.concatenate([s[:, 2:], self.accelerations(s, f[:, 0])], 1), x, u, dt)
        x, force = np.ascontiguousarray(x, np.float64), np.ascontiguousarray(u[:, 0], np.float64)
        return step_states(x, force, self.parameters, self.substeps, float(dt))

    def g(self, x: Tensor) -> Tensor:
        c = torch.cos(x[:, 1])
        b, a, d = self.mp * self.l * c, self.mc + self.mp, self.inertia + self.mp * self.l**2
        det = a * d - b * b
        zero = torch.zeros_like(c)
        return torch.stack([zero, zero, d / det, -b / det], 1).unsqueeze(-1)


def rail_terms(x: Any, model: CartPole, rail: float) -> tuple[Any, Any]:
    """Closed-form HOCBF pieces of the rail barriers (``rail.low``, ``rail.high``) at ``x (B, 4)``, a torch
    tensor or a numpy array (the same type comes back): ``A (B, 2, 1)``, ``L (B, 2, 3)``. With ``a0`` the
    cart's acceleration at zero force and ``b`` its gain per newton, ``rail.low`` is ``h = x + rail``,
    ``L_f h = x'``, ``L_f^2 h = a0``, ``L_g L_f h = b``, and ``rail.high`` the negatives with ``rail - x``."""
    if isinstance(x, np.ndarray):  # the control loop's: compiled, the same formulas (a test holds them equal)
        return rail_terms_numpy(np.ascontiguousarray(x, np.float64), model.parameters, float(rail))
    drift = model.accelerations(x, 0.0 * x[:, 0])[:, 0]
    gain = model.cart_gain(x)
    low = torch.stack([x[:, 0] + rail, x[:, 2], drift], -1)
    high = torch.stack([rail - x[:, 0], -x[:, 2], -drift], -1)
    return torch.stack([gain, -gain], 1)[..., None], torch.stack([low, high], 1)


def rail_values(x: np.ndarray, rail: float) -> np.ndarray:
    """The rail barriers' values ``[x + rail, rail - x]`` ``(B, 2)`` at ``x (B, 4)`` (numpy)."""
    return np.stack([x[:, 0] + rail, rail - x[:, 0]], 1)


# Each cart-pole's certificate, computed at its first reset (the set is the same at every later one).
_CERTIFICATES: dict[tuple[float, ...], Certificate | None] = {}


def wrap_angle(theta: np.ndarray | float) -> np.ndarray | float:
    """Angle to ``(-pi, pi]``."""
    return np.pi - np.mod(np.pi - theta, 2 * np.pi)


class CartPoleRailEnv(SafeBulletEnv):
    """See the module docstring; common options in :class:`~safeliquid.envs._base.SafeBulletEnv`.

    ``rail``: the constraint ``|x| <= rail`` (m). ``is_success``: the pole is within
    ``0.2`` rad of upright with ``|theta_dot| < 1`` rad/s (read it at the episode's last step).
    """

    force_limit = 15.0
    disturbance_scale, disturbance_dim, disturbance_point = 15.0, 1, "the cart, along the rail"
    dt = 0.02
    physics_substeps = 4  # 200 Hz physics under a 50 Hz controller
    cart_mass, pole_mass, pole_length = 1.0, 0.3, 1.0
    rail_gains = (5.0, 5.0)  # default HOCBF gains of the rail barriers (a learned policy brings its own)

    def __init__(self, render_mode: str | None = None, rail: float = 1.5, **options: float) -> None:
        if not rail > 0:
            raise ValueError(f"rail must be > 0 (m), got {rail}")
        self.rail = rail
        super().__init__(np.array([self.force_limit]), 5, render_mode, **options)  # type: ignore[arg-type]
        self._robot = -1

    def _build(self) -> None:
        sim, rng = self.sim, self.np_random
        scale = self._mass_scale()
        mc, mp, length = self.cart_mass * scale, self.pole_mass * scale, self.pole_length
        rail_vis = sim.call(
            p.createVisualShape, p.GEOM_BOX, halfExtents=[self.rail + 0.25, 0.02, 0.02], rgbaColor=[0.3, 0.3, 0.3, 1]
        )
        sim.call(p.createMultiBody, 0.0, -1, rail_vis, basePosition=[0, 0, -0.12])
        for side in (-1, 1):
            stop = sim.call(p.createVisualShape, p.GEOM_BOX, halfExtents=[0.02, 0.1, 0.1], rgbaColor=[0.8, 0.2, 0.2, 1])
            sim.call(p.createMultiBody, 0.0, -1, stop, basePosition=[side * (self.rail + 0.2), 0, -0.05])
        cart = sim.call(p.createCollisionShape, p.GEOM_BOX, halfExtents=[0.2, 0.15, 0.1])
        cart_vis = sim.call(p.createVisualShape, p.GEOM_BOX, halfExtents=[0.2, 0.15, 0.1], rgbaColor=[0.2, 0.4, 0.9, 1])
        half = [0.025, 0.025, length / 2]
        pole = sim.call(p.createCollisionShape, p.GEOM_BOX, halfExtents=half, collisionFramePosition=[0, 0, length / 2])
        pole_vis = sim.call(
            p.createVisualShape,
            p.GEOM_BOX,
            halfExtents=half,
            visualFramePosition=[0, 0, length / 2],
            rgbaColor=[0.9, 0.7, 0.1, 1],
        )
        self._robot = sim.call(
            p.createMultiBody,
            baseMass=0.0,
            linkMasses=[mc, mp],
            linkCollisionShapeIndices=[cart, pole],
            linkVisualShapeIndices=[cart_vis, pole_vis],
            linkPositions=[[0, 0, 0], [0, -0.18, 0]],
            linkOrientations=[[0, 0, 0, 1], [0, 0, 0, 1]],
            linkInertialFramePositions=[[0, 0, 0], [0, 0, length / 2]],
            linkInertialFrameOrientations=[[0, 0, 0, 1], [0, 0, 0, 1]],
            linkParentIndices=[0, 1],
            linkJointTypes=[p.JOINT_PRISMATIC, p.JOINT_REVOLUTE],
            linkJointAxis=[[1, 0, 0], [0, 1, 0]],
        )
        for j in (0, 1):
            sim.call(p.changeDynamics, self._robot, j, linearDamping=0.0, angularDamping=0.0, jointDamping=0.0)
            sim.call(p.setJointMotorControl2, self._robot, j, p.VELOCITY_CONTROL, force=0.0)
        x0 = float(rng.uniform(-0.5, 0.5))
        th0 = float(np.pi + rng.uniform(-0.1, 0.1))  # hanging, slightly off
        sim.call(p.resetJointState, self._robot, 0, x0, 0.0)
        sim.call(p.resetJointState, self._robot, 1, th0, 0.0)
        inertia = sim.call(p.getDynamicsInfo, self._robot, 1)[2][1]  # about the pole's centre of mass, y axis
        self.model = CartPole(mc, mp, length / 2, inertia, substeps=self.physics_substeps)
        samples = torch.as_tensor(rng.uniform(-3, 3, (16, 4)), dtype=torch.float64)
        # The set is the same at every reset of the same cart-pole: certified once (0.2 s), not per episode.
        key = (mc, mp, length, inertia, self.rail, self.force_limit, self.dt, self.physics_substeps)
        self.constraints = ConstraintSet(
            self.model,
            state_box("rail", 0, -self.rail, self.rail, gains=self.rail_gains),
            samples,
            -self.action_bound,
            self.action_bound,
            sample_margin=self.sample_margin(),
            fast_terms=partial(rail_terms, model=self.model, rail=self.rail),
            fast_values=partial(rail_values, rail=self.rail),
            backup=BrakeAndHold(self.model, self.rail, self.force_limit, self.dt).backup(),
            # The states the cart-pole can reach: the rail, any angle, speeds a bang-bang agent reaches.
            state_bounds=([-self.rail, -np.pi, -4.0, -15.0], [self.rail, np.pi, 4.0, 15.0]),
            certificate=_CERTIFICATES.get(key),
        )
        _CERTIFICATES[key] = self.constraints.certificate

    @staticmethod
    def sample_margin() -> float:
        """How far (m of barrier) the model's one-period prediction may be from PyBullet's: the model
        integrates the textbook cart-pole, with the masses and the pole's inertia read back from PyBullet,
        by PyBullet's own ``physics_substeps`` of semi-implicit Euler (:class:`CartPole` ``substeps``), so
        the two agree to rounding over the whole state range (measured: 2e-15 in the state at |x'| <= 4 m/s,
        |theta'| <= 15 rad/s and full force; ``tests/test_envs.py`` checks it). 1e-9 m covers that with
        five orders of magnitude to spare."""
        return 1e-9

    def safety_state(self) -> np.ndarray:
        """``[x, theta, x_dot, theta_dot]`` (``theta`` unwrapped): the state of :attr:`model`."""
        (x, xd, *_), (th, thd, *_) = self.sim.call(p.getJointStates, self._robot, [0, 1])
        return np.array([x, th, xd, thd])

    def position(self, state: np.ndarray) -> np.ndarray:
        return state[:1].copy()  # the cart's place on the rail

    def barrier_values(self, state: np.ndarray | None = None) -> np.ndarray:
        s = self.safety_state() if state is None else state
        return rail_values(np.asarray(s, np.float64)[None], self.rail)[0]

    def _observe(self, state: np.ndarray) -> np.ndarray:
        x, th, xd, thd = state
        return np.array([x, np.cos(th), np.sin(th), xd, thd])

    def _apply(self, action: np.ndarray, push: np.ndarray | None) -> bool:
        force = [float(action[0]), 0.0]
        for _ in range(self.physics_substeps):
            self.sim.call(p.setJointMotorControlArray, self._robot, [0, 1], p.TORQUE_CONTROL, forces=force)
            if push is not None:  # cleared by every stepSimulation
                where = self.sim.call(p.getLinkState, self._robot, 0)[0]
                self.sim.call(p.applyExternalForce, self._robot, 0, [float(push[0]), 0.0, 0.0], where, p.WORLD_FRAME)
            self.sim.call(p.stepSimulation)
        return False  # nothing to touch: the rail's ends are barriers, not bodies

    def _task(self, state: np.ndarray) -> tuple[float, bool, bool]:
        x, th, _, thd = state
        th = float(wrap_angle(th))
        success = abs(th) < 0.2 and abs(thd) < 1.0
        return float(np.cos(th) - 0.1 * (x / self.rail) ** 2), success, False

    def _camera(self) -> tuple[tuple[float, float, float], float, float, float]:
        return (0.0, 0.0, 0.2), 4.0, 0.0, -5.0
