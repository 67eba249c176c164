"""Control-affine dynamics ``x' = f(x) + g(x) u`` in plain batched torch.

A model is what the safety layer needs to turn a barrier ``h(x) >= 0`` into a
constraint on ``u``: ``f(x) -> (B, n)`` and ``g(x) -> (B, n, m)``. Subclass
:class:`ControlAffine` and write them as ordinary tensor code; derivatives are
taken by autograd, never by hand.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from safeliquid._checks import check_tensor

DLS_DAMPING = 1e-3  # damped least squares of resolved-rate control (m^2/rad^2): the task prior, the ArmReach expert


class ControlAffine:
    """Base class: ``state_dim`` n, ``control_dim`` m, and the two maps.

    ``f(x)``: drift, ``(B, n) -> (B, n)``. ``g(x)``: input matrix, ``(B, n) -> (B, n, m)``.
    ``step(x, u, dt)`` predicts one zero-order-hold period (the safety layer's sampled-data
    prediction): with RK4, or, for a second-order state ``[q, q']`` with ``substeps = N``, with the
    ``N`` substeps of semi-implicit Euler a physics engine such as PyBullet takes
    (:func:`semi_implicit`), so that the prediction matches the simulator instead of the ODE.
    """

    state_dim: int
    control_dim: int
    task_dim: int = 0  # rows of :meth:`task_jacobian`; 0: the model has no task space
    substeps: int | None = None  # None: RK4; N: N semi-implicit Euler substeps (state [q, q'])

    def f(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def task_jacobian(self, x: Tensor) -> Tensor:
        """``(B, n) -> (B, task_dim, control_dim)``: the velocity Jacobian of the model's task point (an
        arm's end effector, a vehicle's position) with respect to the generalised velocities, for models
        whose state is ``[q, q']``. Policies with a task-space prior command velocities through it."""
        raise NotImplementedError(f"{type(self).__name__} has no task space (task_dim = 0)")

    def g(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def xdot(self, x: Tensor, u: Tensor) -> Tensor:
        """``f(x) + g(x) u``, shape ``(B, n)``."""
        return self.f(x) + (self.g(x) @ u.unsqueeze(-1)).squeeze(-1)

    def step(self, x: Tensor, u: Tensor, dt: float) -> Tensor:
        """One step of length ``dt`` with ``u`` held: ``(B, n), (B, m) -> (B, n)`` (see the class docstring)."""
        if self.substeps is None:
            return rk4(self.xdot, x, u, dt)
        return semi_implicit(self.xdot, x, u, dt, self.substeps)

    def step_numpy(self, x: np.ndarray, u: np.ndarray, dt: float) -> np.ndarray:
        """:meth:`step` on numpy arrays ``(B, n), (B, m) -> (B, n)`` (float64); models with a closed
        form override it for the batch-1 control loop."""
        with torch.no_grad():
            return self.step(
                torch.as_tensor(x, dtype=torch.float64), torch.as_tensor(u, dtype=torch.float64), dt
            ).numpy()

    def check(self, x: Tensor) -> None:
        """Validate the model on sample states ``x (B, n)``: shapes and finiteness of ``f`` and ``g``."""
        check_tensor("x", x, ("B", self.state_dim))
        fx, gx = self.f(x), self.g(x)
        name = type(self).__name__
        if fx.shape != x.shape:
            raise ValueError(f"{name}.f must return (B, {self.state_dim}), got {tuple(fx.shape)}")
        if gx.shape != (x.shape[0], self.state_dim, self.control_dim):
            raise ValueError(f"{name}.g must return (B, {self.state_dim}, {self.control_dim}), got {tuple(gx.shape)}")
        if not (torch.isfinite(fx).all() and torch.isfinite(gx).all()):
            raise ValueError(f"{name}.f or .g returned NaN/inf on sample states")


def rk4(xdot: Callable[[Any, Any], Any], x: Any, u: Any, dt: float) -> Any:
    """One classic Runge-Kutta step of ``x' = xdot(x, u)`` with ``u`` held for ``dt``; torch or numpy alike."""
    k1 = xdot(x, u)
    k2 = xdot(x + 0.5 * dt * k1, u)
    k3 = xdot(x + 0.5 * dt * k2, u)
    k4 = xdot(x + dt * k3, u)
    return x + dt / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)


def semi_implicit(xdot: Callable[[Any, Any], Any], x: Any, u: Any, dt: float, substeps: int) -> Any:
    """``substeps`` steps of semi-implicit (symplectic) Euler over ``dt`` for a state ``[q, q']``: the velocity
    first, ``q' += h q''``, then the position with the new velocity, ``q += h q'`` (PyBullet's order);
    torch or numpy alike."""
    half, h = x.shape[1] // 2, dt / substeps
    cat = np.concatenate if isinstance(x, np.ndarray) else torch.cat
    for _ in range(substeps):
        qd = x[:, half:] + h * xdot(x, u)[:, half:]
        x = cat([x[:, :half] + h * qd, qd], 1)
    return x


class SingleIntegrator(ControlAffine):
    """``p' = u`` in ``dim`` dimensions; state ``p``."""

    def __init__(self, dim: int = 2) -> None:
        self.state_dim = self.control_dim = dim

    def f(self, x: Tensor) -> Tensor:
        return torch.zeros_like(x)

    def g(self, x: Tensor) -> Tensor:
        return torch.eye(self.state_dim, dtype=x.dtype, device=x.device).expand(x.shape[0], -1, -1)


class DoubleIntegrator(ControlAffine):
    """``p'' = u / mass`` in ``dim`` dimensions (2 planar, 3 spatial); state ``[p, v]``, control a force.

    ``mass``: one value, or one per axis (a robot on stacked sliders moves a slightly different mass along
    each). ``substeps``: ``None`` for the exact zero-order-hold step; ``N`` for the step a physics engine
    takes with ``N`` substeps of semi-implicit Euler (PyBullet's), ``x + v dt + a dt^2 (N + 1) / (2 N)``,
    ``v + a dt``: the same velocity, the position further along the force. The sampled-data prediction then
    matches such a simulator to rounding, instead of by ``|a| dt^2 / (2 N)``.
    """

    def __init__(self, dim: int = 2, mass: float | Sequence[float] = 1.0, substeps: int | None = None) -> None:
        if not (isinstance(dim, int) and dim >= 1):
            raise ValueError(f"dim must be an integer >= 1 (the number of axes), got {dim!r}")
        masses = np.broadcast_to(np.asarray(mass, dtype=np.float64), (dim,)).copy()
        if not (np.isfinite(masses).all() and (masses > 0).all()):
            raise ValueError(f"mass must be positive (one value or one per axis), got {mass}")
        if substeps is not None and not (isinstance(substeps, int) and substeps >= 1):
            raise ValueError(f"substeps must be an integer >= 1 or None, got {substeps!r}")
        self.dim, self.substeps = dim, substeps
        self.masses = masses
        self.mass = float(masses.max())  # the heaviest axis: what bounds the acceleration a force can give
        self.state_dim, self.control_dim, self.task_dim = 2 * dim, dim, dim

    def f(self, x: Tensor) -> Tensor:
        return torch.cat([x[:, self.dim :], torch.zeros_like(x[:, self.dim :])], dim=1)

    def task_jacobian(self, x: Tensor) -> Tensor:
        """The identity ``(B, dim, dim)``: the task point is the position."""
        return torch.eye(self.dim, dtype=x.dtype, device=x.device).expand(x.shape[0], -1, -1)

    def g(self, x: Tensor) -> Tensor:
        d = self.dim
        g = x.new_zeros(x.shape[0], 2 * d, d)
        g[:, d:, :] = torch.diag(torch.as_tensor(1.0 / self.masses, dtype=x.dtype, device=x.device))
        return g

    def step(self, x: Tensor, u: Tensor, dt: float) -> Tensor:
        """The zero-order-hold step in closed form (exact, or the simulator's; see the class docstring)."""
        a = u / torch.as_tensor(self.masses, dtype=u.dtype, device=u.device)
        return self._step(x, a, dt, torch.cat)

    def step_numpy(self, x: np.ndarray, u: np.ndarray, dt: float) -> np.ndarray:
        """:meth:`step` on numpy arrays ``(B, n), (B, m) -> (B, n)``."""
        return self._step(x, u / self.masses, dt, np.concatenate)

    def _step(self, x: Any, a: Any, dt: float, cat: Callable[..., Any]) -> Any:
        d = self.dim
        ahead = 0.5 if self.substeps is None else (self.substeps + 1) / (2 * self.substeps)
        return cat([x[:, :d] + x[:, d:] * dt + ahead * a * dt * dt, x[:, d:] + a * dt], 1)


class Unicycle(ControlAffine):
    """Planar unicycle with speed as state: ``x = [px, py, theta, v]``, ``u = [acceleration, turn rate]``.

    Speed as a state makes position barriers relative degree 2 in both inputs,
    so a filter can both brake and steer.
    """

    state_dim, control_dim = 4, 2

    def f(self, x: Tensor) -> Tensor:
        theta, v = x[:, 2], x[:, 3]
        z = torch.zeros_like(v)
        return torch.stack([v * torch.cos(theta), v * torch.sin(theta), z, z], dim=1)

    def g(self, x: Tensor) -> Tensor:
        g = x.new_zeros(x.shape[0], 4, 2)
        g[:, 3, 0] = 1.0
        g[:, 2, 1] = 1.0
        return g


class Manipulator(ControlAffine):
    """Joint-torque manipulator ``M(q) q'' + c(q, q') = tau``; state ``[q, q']``, control ``tau``.

    ``mass_matrix(q) -> (B, k, k)`` and ``bias(q, qd) -> (B, k)`` (Coriolis,
    centrifugal and gravity) come from the caller, e.g. an environment's simulator.
    They are not differentiated here (barriers on joint positions or on points
    placed by forward kinematics only need them through ``f`` and ``g``, evaluated).
    ``jacobian(q) -> (B, task_dim, k)``: optional, the end effector's linear velocity Jacobian.
    """

    def __init__(
        self,
        dof: int,
        mass_matrix: Callable[[Tensor], Tensor],
        bias: Callable[[Tensor, Tensor], Tensor],
        jacobian: Callable[[Tensor], Tensor] | None = None,
        task_dim: int = 0,
        substeps: int | None = None,
    ):
        if (jacobian is None) != (task_dim == 0):
            raise ValueError(f"a Manipulator's jacobian and task_dim come together, got task_dim={task_dim}")
        self.substeps = substeps
        self.dof = dof
        self.state_dim, self.control_dim, self.task_dim = 2 * dof, dof, task_dim
        self._mass_matrix, self._bias, self._jacobian = mass_matrix, bias, jacobian

    def task_jacobian(self, x: Tensor) -> Tensor:
        if self._jacobian is None:
            return super().task_jacobian(x)
        return self._jacobian(x[:, : self.dof])

    def _minv(self, x: Tensor) -> Tensor:
        return torch.linalg.inv(self._mass_matrix(x[:, : self.dof]))

    def f(self, x: Tensor) -> Tensor:
        q, qd = x[:, : self.dof], x[:, self.dof :]
        qdd = -(self._minv(x) @ self._bias(q, qd).unsqueeze(-1)).squeeze(-1)
        return torch.cat([qd, qdd], dim=1)

    def g(self, x: Tensor) -> Tensor:
        top = x.new_zeros(x.shape[0], self.dof, self.dof)
        return torch.cat([top, self._minv(x)], dim=1)

    def xdot(self, x: Tensor, u: Tensor) -> Tensor:
        """``[q', M^-1 (u - c)]``: one mass matrix and one bias per call (``f + g u`` would ask for two)."""
        q, qd = x[:, : self.dof], x[:, self.dof :]
        rhs = (u.to(x.dtype) - self._bias(q, qd)).unsqueeze(-1)
        return torch.cat([qd, torch.linalg.solve(self._mass_matrix(q), rhs).squeeze(-1)], dim=1)


def joint_velocity(J: Tensor, v: Tensor, damping: float = DLS_DAMPING) -> Tensor:
    """Resolved rate: the joint velocities ``J+ v (..., m)`` that move the task point at ``v (..., k)``, with
    the damped least-squares inverse ``J+ = J^T (J J^T + damping I)^-1`` of ``J (..., k, m)`` (no motion in
    the Jacobian's null space; bounded near singularities)."""
    Jt = J.transpose(-1, -2)
    eye = torch.eye(J.shape[-2], dtype=J.dtype, device=J.device)
    return (Jt @ torch.linalg.solve(J @ Jt + damping * eye, v.unsqueeze(-1))).squeeze(-1)
