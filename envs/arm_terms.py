"""ArmReach's barriers in closed form: their values and HOCBF pieces from the compiled kinematics
(:func:`arm_terms`, :func:`arm_values`), and the control points through pytorch_kinematics
(:class:`PointKinematics`: the differentiable torch barriers, which a test holds equal to the closed form)."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pybullet_data
import torch
from torch import Tensor

from safeliquid.envs import arm_kernel
from safeliquid.envs.arm_model import CONTROL_POINTS, URDF, KukaModel


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


class PointKinematics:
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
