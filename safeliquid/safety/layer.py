"""The BarrierNet / safety-filter layer: the one implementation of the CBF-QP projection.

At a state ``x`` the layer solves

    min_u 1/2 (u - u_ref)' H (u - u_ref)   s.t.   G(x, p) u <= b(x, p) - t,   u_min <= u <= u_max

with ``G, b`` the HOCBF rows of the constraint set (:meth:`ConstraintSet.rows`) under
class-K gains ``p`` (learned, per sample: BarrierNet; or each barrier's defaults: a
safety filter), the rows elastic and the bounds hard (:func:`safeliquid.qp.solve_qp`).

**Sampled-data correction** (``t``). With ``u`` held for the control period ``dt``, the
continuous condition at the sample does not bound ``h`` at the next sample. The layer
predicts ``h(x+)`` with the model; for every barrier whose prediction misses the
discrete-time condition ``h(x+) >= (1 - gamma) h(x) + margin`` it tightens that row by what
closes the deficit and re-solves, at most ``tries`` times. An extra ``e`` on ``psi_r``
raises ``h(x+)`` by about ``e dt^r / r!``, so the tightening grows by
``OVERSHOOT * deficit * r! / dt^r``. The target sits a hair (:data:`ROUNDING`) above the
bound so that rounding at ``h = 0`` cannot land on the unsafe side.

Two paths, side by side and held equal by a test:

- :meth:`BarrierLayer.forward`: batched torch, differentiable in ``u_ref``, the gains and
  ``H`` through the QP's KKT conditions (the tightening is a constant of the backward pass);
  for training and vectorised environments.
- :meth:`BarrierLayer.project`: one state in numpy, the closed-form rows and the compiled
  QP kernel called directly (:func:`safeliquid.qp.solve_qp_numpy`); for control loops.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from safeliquid._checks import check_tensor
from safeliquid.qp import DEFAULT_SETTINGS, STATUS_NAMES, QPSettings, QPSolution, solve_qp, solve_qp_numpy
from safeliquid.safety.constraints import ConstraintSet, hocbf_coefficients

ROUNDING = {torch.float64: 1e-10, torch.float32: 1e-5}  # relative aim above h = 0, per dtype
SAMPLED_DATA_TRIES = 6  # re-solves of the sampled-data correction
OVERSHOOT = 1.5  # the tightening closes this multiple of the predicted deficit (the prediction is first order)
ACTIVE = 1e-9  # a row's multiplier above this: the row is active


@dataclass(frozen=True)
class SampledData:
    """The sampled-data correction's settings: control period ``dt`` (s, zero-order hold), the discrete-time
    CBF rate ``gamma`` in (0, 1], the robustness ``margin`` (barrier units, >= 0) the prediction must clear,
    and the number of re-solves ``tries`` (>= 0; 0 enforces the continuous condition only)."""

    dt: float
    gamma: float = 1.0
    margin: float = 0.0
    tries: int = SAMPLED_DATA_TRIES

    def __post_init__(self) -> None:
        if not (math.isfinite(self.dt) and self.dt > 0):
            raise ValueError(f"dt must be a positive finite number (the control period, s), got {self.dt}")
        if not 0 < self.gamma <= 1:
            raise ValueError(f"gamma must be in (0, 1], got {self.gamma}")
        if not (math.isfinite(self.margin) and self.margin >= 0):
            raise ValueError(f"margin must be a finite number >= 0 (barrier units), got {self.margin}")
        if not (isinstance(self.tries, int) and self.tries >= 0):
            raise ValueError(f"tries must be an integer >= 0, got {self.tries!r}")


@dataclass
class FilterRecord:
    """What the layer did, per sample: torch tensors from :meth:`BarrierLayer.forward`, numpy arrays (batch 1)
    from :meth:`BarrierLayer.project`. Barrier values keep the CBF sign (``>= 0`` safe).

    ``barrier (B, K)`` values ``h_k(x)``; ``active (B, K)`` rows at their bound;
    ``intervention (B,)`` ``|u_safe - u_raw|``; ``slack (B, K)`` row violation the
    QP had to accept (0 unless infeasible); ``status (B,)`` QP status
    (:data:`safeliquid.qp.OPTIMAL`, ``INFEASIBLE``: ``u_safe`` minimises the violation within
    the input bounds, ``MAX_ITER``); ``corrections (B,)`` sampled-data re-solves made.
    """

    barrier: Tensor | np.ndarray
    active: Tensor | np.ndarray
    intervention: Tensor | np.ndarray
    slack: Tensor | np.ndarray
    status: Tensor | np.ndarray
    names: list[str]
    corrections: Tensor | np.ndarray | None = None

    def status_names(self) -> list[str]:
        return [STATUS_NAMES.get(int(s), "unknown") for s in self.status]


def solve_rows(
    u_ref: Tensor,
    G: Tensor,
    b: Tensor,
    u_min: Tensor | None,
    u_max: Tensor | None,
    h_diag: Tensor | None = None,
    backend: str = "native",
    settings: QPSettings = DEFAULT_SETTINGS,
) -> QPSolution:
    """The layer's QP on given rows: ``u_ref (B, m)``, ``G (B, K, m)``, ``b (B, K)``, bounds ``(m,)`` or
    ``(B, m)``, ``h_diag (B, m)`` the positive diagonal of ``H`` (None: the identity). Differentiable in
    every tensor. Callers that assemble rows themselves (a policy padding several scenes into one batch)
    solve them here, so every path shares one QP."""
    m = u_ref.shape[1]
    if h_diag is None:
        Q = torch.eye(m, dtype=u_ref.dtype).expand(u_ref.shape[0], m, m)
        q = -u_ref
    else:
        Q = torch.diag_embed(h_diag)
        q = -(h_diag * u_ref)
    return solve_qp(Q, q, G, b, u_min, u_max, backend=backend, settings=settings)


class BarrierLayer(nn.Module):
    """The BarrierNet layer (Xiao, Hasani, Li, Rus 2023), also the safety filter (see the module docstring).

    ``dt``: the control period for the sampled-data correction (``None``: the continuous condition only);
    ``gamma``, ``margin`` (``None``: the constraint set's ``sample_margin`` when ``dt`` is given, else 0) and
    ``tries`` (``None``: :data:`SAMPLED_DATA_TRIES`) as in :class:`SampledData`. ``settings``: the QP's.

    ``gains``: the positive class-K gains a policy outputs, ``constraints.gain_count`` of them (one per
    barrier and HOCBF order, in barrier order: each barrier's ``r`` orders consecutive); ``None`` uses each
    barrier's defaults. ``h_diag``: an optional positive diagonal of the QP's quadratic term.
    ``action_name``: what error messages call the action (a filter's is the agent's ``u_raw``).
    """

    def __init__(
        self,
        constraints: ConstraintSet,
        dt: float | None = None,
        gamma: float = 1.0,
        margin: float | None = None,
        tries: int | None = None,
        settings: QPSettings = DEFAULT_SETTINGS,
        action_name: str = "u_ref",
    ) -> None:
        super().__init__()
        self.action_name = action_name
        if margin is not None and margin != 0 and dt is None:
            raise ValueError(f"margin needs dt (it is a sampled-data margin), got margin={margin}, dt=None")
        self.constraints = constraints
        self.settings = settings
        self.sampling: SampledData | None = None
        if dt is not None:
            margin = constraints.sample_margin if margin is None else margin
            tries = SAMPLED_DATA_TRIES if tries is None else tries
            self.sampling = SampledData(float(dt), gamma, float(margin), tries)
        elif not 0 < gamma <= 1:
            raise ValueError(f"gamma must be in (0, 1], got {gamma}")
        model = constraints.model
        self._m = model.control_dim
        degree = constraints.degrees.numpy()
        self._degree = degree
        # An extra e on psi_r raises h(x+) by about e dt^r / r!.
        self._per = None if dt is None else float(dt) ** degree / np.array([math.factorial(int(r)) for r in degree])
        self._linear = all(bar.class_k == "linear" for bar in constraints.barriers)
        self._default: np.ndarray | None = None  # (K, R) default gains, R + 1 the width of the terms' L
        self._default_coeff: np.ndarray | None = None  # (K, R+1): the default rows' coefficients, once
        self._gain_at = constraints.gain_index()  # (barrier, order) of each flat gain
        self._eye = np.eye(self._m)[None].copy()
        self._lb = None if constraints.u_min is None else constraints.u_min.double().numpy()[None].copy()
        self._ub = None if constraints.u_max is None else constraints.u_max.double().numpy()[None].copy()

    @property
    def gain_count(self) -> int:
        return self.constraints.gain_count

    # -- the batched torch path ------------------------------------------------------------------
    def forward(
        self, x: Tensor, u_ref: Tensor, gains: Tensor | None = None, h_diag: Tensor | None = None
    ) -> tuple[Tensor, FilterRecord]:
        """``x (B, n)``, ``u_ref (B, m)``, ``gains (B, gain_count)`` or None, ``h_diag (B, m)`` or None ->
        ``(u_safe (B, m), FilterRecord)``; differentiable in ``u_ref``, ``gains`` and ``h_diag``."""
        self._check_torch(x, u_ref, gains, h_diag)
        G, b, hx = self.constraints.rows(x, gains)
        u_min, u_max = self._bounds(x.dtype)
        sol = solve_rows(u_ref, G, b, u_min, u_max, h_diag, settings=self.settings)
        corrections = torch.zeros(x.shape[0], dtype=torch.long)
        if self.sampling is not None and G.shape[1]:
            s = self.sampling
            target = (1.0 - s.gamma) * hx.clamp_min(0.0) + ROUNDING[b.dtype] * (1.0 + hx.abs()) + s.margin
            tighten = torch.zeros_like(b)
            per = torch.as_tensor(self._per, dtype=b.dtype)
            for _ in range(s.tries):
                with torch.no_grad():
                    h_next = self.constraints.values(self.constraints.model.step(x, sol.u.detach().to(x.dtype), s.dt))
                    deficit = (target - h_next).clamp_min(0.0)
                short = (deficit > 0).any(-1)
                if not bool(short.any()):
                    break
                corrections += short.long()
                tighten = tighten + OVERSHOOT * deficit / per
                sol = solve_rows(u_ref, G, b - tighten, u_min, u_max, h_diag, settings=self.settings)
        active = sol.lam.detach() > ACTIVE if sol.lam is not None else torch.zeros_like(b, dtype=torch.bool)
        record = FilterRecord(
            barrier=hx,
            active=active,
            intervention=(sol.u.detach() - u_ref.detach()).norm(dim=-1),
            slack=sol.slack,
            status=sol.status,
            names=self.constraints.names,
            corrections=corrections,
        )
        return sol.u, record

    def _check_torch(self, x: Tensor, u_ref: Tensor, gains: Tensor | None, h_diag: Tensor | None) -> None:
        model = self.constraints.model
        check_tensor("x", x, ("B", model.state_dim))
        batch = x.shape[0]
        check_tensor(self.action_name, u_ref, (batch, model.control_dim))
        if u_ref.dtype != x.dtype:
            raise TypeError(f"{self.action_name} must have x's dtype {x.dtype}, got {u_ref.dtype}")
        if gains is not None:
            check_tensor("gains", gains, (batch, self.gain_count))
            if bool((gains <= 0).any()):
                raise ValueError("gains must be positive (class-K); use softplus or a scaled sigmoid on the head")
        if h_diag is not None:
            check_tensor("h_diag", h_diag, (batch, model.control_dim))
            if bool((h_diag <= 0).any()):
                raise ValueError("h_diag must be positive (the QP's quadratic term must be positive definite)")

    def _bounds(self, dtype: torch.dtype) -> tuple[Tensor | None, Tensor | None]:
        c = self.constraints
        return (None if c.u_min is None else c.u_min.to(dtype)), (None if c.u_max is None else c.u_max.to(dtype))

    # -- the batch-1 numpy path ------------------------------------------------------------------
    def project(
        self, x: np.ndarray, u_ref: np.ndarray, gains: np.ndarray | None = None
    ) -> tuple[np.ndarray, FilterRecord]:
        """One state: ``x (n,)``, ``u_ref (m,)``, ``gains (gain_count,)`` or None (float64 numpy) ->
        ``(u_safe (m,) float64, FilterRecord)`` with batch-1 numpy fields. The same numbers as
        :meth:`forward` (identity ``H``), without torch on the way when the constraint set has closed-form
        terms that take numpy. Raises ``ValueError`` on NaN/inf or wrongly shaped input."""
        c = self.constraints
        x = _vector("x", x, c.model.state_dim)
        u_ref = _vector(self.action_name, u_ref, self._m)
        if gains is not None:
            gains = _vector("gains", gains, self.gain_count)
            if (gains <= 0).any():
                raise ValueError("gains must be positive (class-K); use softplus or a scaled sigmoid on the head")
        G, b, hx = self._rows_numpy(x, gains)
        k = b.shape[0]
        q = -u_ref[None]

        def solve(rhs_b: np.ndarray) -> tuple[np.ndarray, ...]:
            return solve_qp_numpy(self._eye, q, G[None], rhs_b[None], self._lb, self._ub, self.settings)

        u, slack, status, lam = solve(b)
        corrections = 0
        s = self.sampling
        if s is not None and k:
            target = (1.0 - s.gamma) * np.maximum(hx, 0.0) + ROUNDING[torch.float64] * (1.0 + np.abs(hx)) + s.margin
            tighten = np.zeros(k)
            for _ in range(s.tries):
                h_next = c.values_numpy(c.model.step_numpy(x[None], u, s.dt))[0]
                deficit = np.maximum(target - h_next, 0.0)
                if not (deficit > 0).any():
                    break
                corrections += 1
                tighten += OVERSHOOT * deficit / self._per
                u, slack, status, lam = solve(b - tighten)
        record = FilterRecord(
            barrier=hx[None],
            active=lam[:, :k] > ACTIVE,
            intervention=np.array([np.linalg.norm(u[0] - u_ref)]),
            slack=slack,
            status=status.astype(np.int64),
            names=c.names,
            corrections=np.array([corrections]),
        )
        return u[0], record

    def _rows_numpy(self, x: np.ndarray, gains: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(G (K, m), b (K,), h (K,))`` at one state: from the gain-free terms (linear class-K), else through
        :meth:`ConstraintSet.rows` in torch."""
        c = self.constraints
        if not len(c.barriers):
            return np.zeros((0, self._m)), np.zeros(0), np.zeros(0)
        if not self._linear:
            flat = None if gains is None else torch.from_numpy(gains[None])
            G, b, h = c.rows(torch.from_numpy(x[None]), flat)
            return G[0].detach().numpy(), b[0].detach().numpy(), h[0].detach().numpy()
        A, L = c.terms_numpy(x[None])
        top = L.shape[-1] - 1
        if self._default is None or self._default.shape[-1] != top:
            self._default = c.default_gains(top)
            self._default_coeff = hocbf_coefficients(self._degree, self._default, top)
        coeff = self._default_coeff
        if gains is not None:
            table = self._default.copy()
            table[self._gain_at] = gains
            coeff = hocbf_coefficients(self._degree, table, top)
        return -A[0], (coeff * L[0]).sum(-1), L[0, :, 0]


def _vector(name: str, a: np.ndarray, size: int) -> np.ndarray:
    """``a`` as a finite float64 vector of ``size`` entries, or a ``ValueError`` naming it."""
    a = np.asarray(a, dtype=np.float64)
    if a.shape != (size,):
        raise ValueError(f"{name} must have shape ({size},), got {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} contains NaN or inf; expected finite values")
    return a
