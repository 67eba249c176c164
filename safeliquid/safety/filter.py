"""The safety filter: the BarrierNet layer (:mod:`safeliquid.safety.layer`) with each barrier's default gains."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from safeliquid.qp import DEFAULT_SETTINGS, QPSettings
from safeliquid.safety.constraints import ConstraintSet
from safeliquid.safety.layer import BarrierLayer, FilterRecord


class SafetyFilter:
    """Filter raw actions with fixed class-K gains (each barrier's defaults): a drop-in safety layer.

    ``filter(x (B, n), u_raw (B, m)) -> (u_safe (B, m), FilterRecord)`` in torch, batched (training,
    vectorised environments); ``filter_numpy(x (n,), u_raw (m,)) -> (u_safe (m,), FilterRecord)`` for one
    state (control loops: no torch on the way). Both raise ``ValueError`` on NaN/inf or wrongly shaped
    states and actions, and give the same numbers.

    ``dt``: the control period when actions are held between samples (zero-order hold). The continuous
    CBF condition then does not bound the barrier at the next sample; the filter predicts it with the
    model and adds cuts to the QP until the discrete-time condition ``h(x+) >= (1 - gamma) h(x) + margin``
    holds (:mod:`safeliquid.safety.layer`). ``None`` enforces the continuous-time condition only.

    ``margin``: robustness to model error, in barrier units: a simulator (or robot) whose one-period
    prediction differs from the model's by less than ``margin`` still keeps ``h >= 0``. Needs ``dt``;
    ``None`` takes the constraint set's ``sample_margin`` when ``dt`` is given (else 0).

    ``disturbance``: the bound ``(m,)`` of a matched disturbance (in input units) the next sample must be
    robust to, one period at a time (:class:`~safeliquid.safety.layer.SampledData`). Needs ``dt``.
    """

    def __init__(
        self,
        constraints: ConstraintSet,
        dt: float | None = None,
        gamma: float = 1.0,
        margin: float | None = None,
        settings: QPSettings = DEFAULT_SETTINGS,
        disturbance: np.ndarray | list[float] | None = None,
    ) -> None:
        self.layer = BarrierLayer(
            constraints, dt=dt, gamma=gamma, margin=margin, settings=settings, action_name="u_raw",
            disturbance=disturbance,
        )  # fmt: skip
        self.constraints = constraints
        self.model = constraints.model
        self.dt, self.gamma = dt, gamma
        self.margin = 0.0 if self.layer.sampling is None else self.layer.sampling.margin

    def filter(self, x: Tensor, u_raw: Tensor) -> tuple[Tensor, FilterRecord]:
        if not isinstance(u_raw, Tensor):
            raise TypeError(f"u_raw must be a torch.Tensor, got {type(u_raw).__name__}; for numpy use filter_numpy")
        with torch.no_grad():
            u, record = self.layer(x, u_raw)
        return u.detach(), record

    def filter_numpy(self, x: np.ndarray, u_raw: np.ndarray) -> tuple[np.ndarray, FilterRecord]:
        return self.layer.project(x, u_raw)
