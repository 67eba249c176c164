"""The BarrierNet / safety-filter layer: the one implementation of the CBF-QP projection.

At a state ``x`` the layer solves

    min_u 1/2 (u - u_ref)' H (u - u_ref)   s.t.   G(x, p) u <= b(x, p) - t,   u_min <= u <= u_max

with ``G, b`` the HOCBF rows of the constraint set (:meth:`ConstraintSet.rows`) under
class-K gains ``p`` (learned, per sample: BarrierNet; or each barrier's defaults: a
safety filter), the rows elastic and the bounds hard (:func:`safeliquid.qp.solve_qp`).

**Sampled-data correction** (the cuts). With ``u`` held for the control period ``dt``, the
continuous condition at the sample does not bound ``h`` at the next sample. The layer
predicts ``h(x+)`` with the model; for every barrier whose prediction misses the
discrete-time condition ``h(x+) >= (1 - gamma) h(x) + margin`` it adds that condition
linearised in ``u`` as a cut (:func:`discrete_rows`), keeps it, and re-solves, at most
``tries`` times, each cut aiming further above the target (:data:`OVERSHOOT`, doubled per
round: a linearisation overestimates a concave barrier). The target sits a hair
(:data:`ROUNDING`) above the bound so that rounding at ``h = 0`` cannot land on the unsafe side.

**Fallback.** Where the QP cannot meet its rows (status not optimal), its prediction misses the
discrete-time target, or the state is outside the certified set (the HOCBF safe set,
:meth:`ConstraintSet.in_safe_set`, e.g. after a disturbance beyond the margin; with an implicit backup set,
:mod:`safeliquid.safety.backup_set`, the test is instead that the model's next sample under the QP's input is
in that set), the layer sends the set's declared backup controller
(:class:`~safeliquid.safety.certify.Backup`) if it has one, else the QP's least-violating input, and says so
in the record (``fallback``): it never relaxes a row silently. On a certified set
(:mod:`safeliquid.safety.certify`) the backup keeps the state in the safe set. With an implicit backup set
the fallback first tries blends of the QP's input with the backup's (:data:`BLEND`), each sent only if its
next sample is in the set.

Two paths, side by side and held equal by a test:

- :meth:`BarrierLayer.forward`: batched torch, differentiable in ``u_ref``, the gains and
  ``H`` through the QP's KKT conditions (the sampled-data cuts are constants of the backward pass);
  for training and vectorised environments.
- :meth:`BarrierLayer.project`: one state in numpy, the closed-form rows and the compiled
  QP kernel called directly (:func:`safeliquid.qp.solve_qp_numpy`); for control loops.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from safeliquid._checks import check_tensor
from safeliquid.qp import DEFAULT_SETTINGS, OPTIMAL, STATUS_NAMES, QPSettings, QPSolution, solve_qp, solve_qp_numpy
from safeliquid.safety.backup_set import keeps
from safeliquid.safety.certify import SAFE_SET_TOL
from safeliquid.safety.constraints import ConstraintSet, hocbf_coefficients

ROUNDING = {torch.float64: 1e-10, torch.float32: 1e-5}  # relative aim above h = 0, per dtype
SAMPLED_DATA_TRIES = 6  # re-solves of the sampled-data correction
OVERSHOOT = 0.5  # the first discrete-time cut aims this share of the deficit above the target; doubled per round
PAD_RHS = 1.0  # right-hand side of the rows of barriers that need no discrete-time row: 0 u <= 1, never active
ACTIVE = 1e-9  # a row's multiplier above this: the row is active
BLEND = (0.5, 0.25)  # shares of the QP's input a fallback to an implicit backup set tries, before the backup alone


@dataclass(frozen=True)
class SampledData:
    """The sampled-data correction's settings: control period ``dt`` (s, zero-order hold), the discrete-time
    CBF rate ``gamma`` in (0, 1], the robustness ``margin`` (barrier units, >= 0) the prediction must clear,
    the number of re-solves ``tries`` (>= 0; 0 enforces the continuous condition only), and an optional bound
    ``disturbance (m,)`` on a matched disturbance (one that enters as the input does, in its units, e.g. an
    external force on a force-driven body): the prediction must then clear the target against the worst
    such disturbance to first order, ``h(x+(u)) - |dh(x+)/du| w_bar`` (a discrete-time robust CBF margin,
    after Jankovic 2018), one period at a time."""

    dt: float
    gamma: float = 1.0
    margin: float = 0.0
    tries: int = SAMPLED_DATA_TRIES
    disturbance: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.disturbance is not None and not all(math.isfinite(w) and w >= 0 for w in self.disturbance):
            raise ValueError(f"disturbance must be finite bounds >= 0 (input units), got {self.disturbance}")

        if not (math.isfinite(self.dt) and self.dt > 0):
            raise ValueError(f"dt must be a positive finite number (the control period, s), got {self.dt}")
        if not 0 < self.gamma <= 1:
            raise ValueError(f"gamma must be in (0, 1], got {self.gamma}")
        if not (math.isfinite(self.margin) and self.margin >= 0):
            raise ValueError(f"margin must be a finite number >= 0 (barrier units), got {self.margin}")
        if not (isinstance(self.tries, int) and self.tries >= 0):
            raise ValueError(f"tries must be an integer >= 0, got {self.tries!r}")

    def target(self, h: Any) -> Any:
        """What each barrier must reach at the next sample from values ``h (..., K)`` now (torch or numpy):
        ``(1 - gamma) max(h, 0) + margin``, a hair (:data:`ROUNDING`) above it."""
        if isinstance(h, np.ndarray):
            aim = ROUNDING[torch.float64] * np.abs(h) + (ROUNDING[torch.float64] + self.margin)
            return aim if self.gamma == 1.0 else aim + (1.0 - self.gamma) * np.maximum(h, 0.0)
        return (1.0 - self.gamma) * h.clamp_min(0.0) + ROUNDING[h.dtype] * (1.0 + h.abs()) + self.margin


@dataclass
class FilterRecord:
    """What the layer did, per sample: torch tensors from :meth:`BarrierLayer.forward`, numpy arrays (batch 1)
    from :meth:`BarrierLayer.project`. Barrier values keep the CBF sign (``>= 0`` safe).

    ``barrier (B, K)`` values ``h_k(x)``; ``active (B, K)`` rows at their bound;
    ``intervention (B,)`` ``|u_safe - u_raw|``; ``slack (B, K)`` row violation the
    QP had to accept (0 unless infeasible); ``status (B,)`` QP status
    (:data:`safeliquid.qp.OPTIMAL`, ``INFEASIBLE``: no input within the bounds meets the rows,
    ``MAX_ITER``); ``corrections (B,)`` sampled-data re-solves made; ``fallback (B,)`` the layer sent its
    fallback (the backup controller, or the least-violating input) instead of a QP solution that meets
    every row: the QP was not optimal, or the state was outside the safe set.
    """

    barrier: Tensor | np.ndarray
    active: Tensor | np.ndarray
    intervention: Tensor | np.ndarray
    slack: Tensor | np.ndarray
    status: Tensor | np.ndarray
    names: list[str]
    corrections: Tensor | np.ndarray | None = None
    fallback: Tensor | np.ndarray | None = None

    def status_names(self) -> list[str]:
        return [STATUS_NAMES.get(int(s), "unknown") for s in self.status]


def discrete_rows(h0: Any, J: Any, u0: Any, target: Any, overshoot: float = OVERSHOOT) -> tuple[Any, Any]:
    """The discrete-time CBF condition ``h_k(x+(u)) >= target_k`` linearised at ``u0 (B, m)``, as QP rows
    ``G (B, K, m)``, ``b (B, K)`` (torch or numpy): ``h0 (B, K)`` the prediction at ``u0``, ``J (B, K, m)`` its
    input sensitivity. Each row aims ``overshoot`` times the deficit above the target (a linearisation
    overestimates a concave barrier; the cuts are kept and re-linearised until the prediction holds).
    Rows are scaled to unit ``|G|`` (so their multipliers are in input units, well below
    the elastic penalty); barriers that already meet their target get an inactive row; a barrier that misses
    it and that no input moves (``J = 0``) gets an unsatisfiable one (``0 u <= -1``): the QP reports it."""
    xp = np if isinstance(h0, np.ndarray) else torch
    norm = xp.sqrt((J * J).sum(-1))
    short = h0 < target
    movable = norm > 1e-12 * (1.0 + xp.abs(h0))
    scale = xp.where(movable, norm, 0 * norm + 1.0)
    G = -J / scale[..., None]
    short_by = target - h0
    aim = target + overshoot * xp.where(short, short_by, 0 * short_by)
    b = (h0 - (J * u0[..., None, :]).sum(-1) - aim) / scale
    keep = (short & movable)[..., None]
    G = xp.where(keep, G, 0 * G)
    b = xp.where(short & movable, b, xp.where(short, 0 * b - 1.0, 0 * b + PAD_RHS))
    return G, b


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
    ``gamma``, ``margin`` (``None``: the constraint set's ``sample_margin``, plus its backup's ``clearance``,
    when ``dt`` is given, else 0) and ``tries`` (``None``: :data:`SAMPLED_DATA_TRIES`) as in
    :class:`SampledData`. ``settings``: the QP's.

    ``gains``: the positive class-K gains a policy outputs, ``constraints.gain_count`` of them (one per
    barrier and HOCBF order, in barrier order: each barrier's ``r`` orders consecutive); ``None`` uses each
    barrier's defaults. ``h_diag``: an optional positive diagonal of the QP's quadratic term.
    ``action_name``: what error messages call the action (a filter's is the agent's ``u_raw``).
    ``disturbance``: the bound ``(m,)`` (or one number) of a matched disturbance the prediction must be robust
    to (see :class:`SampledData`); needs ``dt``.
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
        disturbance: np.ndarray | list[float] | None = None,
    ) -> None:
        super().__init__()
        self.action_name = action_name
        if margin is not None and margin != 0 and dt is None:
            raise ValueError(f"margin needs dt (it is a sampled-data margin), got margin={margin}, dt=None")
        self.constraints = constraints
        self.settings = settings
        self.sampling: SampledData | None = None
        if dt is not None:
            if margin is None:
                backup = constraints.backup
                margin = constraints.sample_margin + (backup.clearance if backup is not None else 0.0)
            tries = SAMPLED_DATA_TRIES if tries is None else tries
            w = None
            if disturbance is not None:
                w = tuple(
                    float(v) for v in np.broadcast_to(np.asarray(disturbance, float), (constraints.model.control_dim,))
                )
            self.sampling = SampledData(float(dt), gamma, float(margin), tries, w)
        elif not 0 < gamma <= 1:
            raise ValueError(f"gamma must be in (0, 1], got {gamma}")
        elif disturbance is not None:
            raise ValueError("disturbance needs dt (its margin is on the sampled-data prediction)")
        model = constraints.model
        self._m = model.control_dim
        degree = constraints.degrees.numpy()
        self._degree = degree
        # The finite-difference step of the prediction's input sensitivity: 1e-3 of the input scale, well above
        # the resolution of a simulator's kinematics (PyBullet's link frames are float32: 7.5e-9 m steps) and
        # small enough that the prediction's curvature in u does not matter next to the cuts' overshoot.
        scale = 1.0 if constraints.u_max is None else float(constraints.u_max.abs().max())
        self._delta = 1e-3 * (1.0 + scale)
        self._default: np.ndarray | None = None  # (K, R) default gains, R + 1 the width of the terms' L
        self._default_coeff: np.ndarray | None = None  # (K, R+1): the default rows' coefficients, once
        self._gain_at = constraints.gain_index()  # (barrier, order) of each flat gain
        bounds = [b.abs().max() for b in (constraints.u_min, constraints.u_max) if b is not None]
        # The QP resolves a reference to its bounds' precision up to ~2e9 (float64) or ~4e3 (float32) times
        # their scale; one beyond 1e6 (100) times it is a fault upstream, refused by name (_check_scale).
        self._reference_limit = None if not bounds else 1.0 + float(max(bounds))
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
        verified = torch.ones(x.shape[0], dtype=torch.bool)
        x_next = None  # the prediction's next sample under the final u, reused by the implicit-set test
        k = G.shape[1]
        if self.sampling is not None and k and self.sampling.tries:
            s = self.sampling
            target = s.target(hx)
            h0, J, x_next = self._robust_torch(x, sol.u.detach())
            G_all, b_all = G, b
            for i in range(s.tries):
                verified = (h0 >= target).all(-1)
                if bool(verified.all()):
                    break
                corrections += (~verified).long()
                # A cut per iteration, kept: re-solving must not undo what an earlier cut fixed.
                if J is None:
                    J = self._sensitivity_torch(x, sol.u.detach(), h0)
                G_d, b_d = discrete_rows(h0, J, sol.u.detach(), target, OVERSHOOT * 2**i)
                G_all, b_all = torch.cat([G_all, G_d], 1), torch.cat([b_all, b_d], 1)
                sol = solve_rows(u_ref, G_all, b_all, u_min, u_max, h_diag, settings=self.settings)
                h0, J, x_next = self._robust_torch(x, sol.u.detach())
            verified = (h0 >= target).all(-1)
        slack = sol.slack.reshape(x.shape[0], -1, k).amax(1) if k else sol.slack  # a barrier's row and its cuts
        active = sol.lam.detach() > ACTIVE if sol.lam is not None else torch.zeros_like(b, dtype=torch.bool)
        u = sol.u
        fallback = (sol.status != OPTIMAL) | ~verified | ~self._in_certified_set_torch(x.detach(), u.detach(), x_next)
        backup = self.constraints.backup
        if backup is not None and bool(fallback.any()):
            if backup.implicit:  # row by row: each may take a blend (see _fallback_numpy)
                x_np, u_np = x.detach().double().numpy(), u.detach().double().numpy()
                u_b = u_np.copy()
                for i in torch.nonzero(fallback).flatten().tolist():
                    u_b[i] = self._fallback_numpy(x_np[i], u_np[i])
                u_b = torch.from_numpy(u_b).to(u.dtype)
            else:
                u_b = torch.as_tensor(backup.control(x.detach()), dtype=u.dtype)
            u = torch.where(fallback.unsqueeze(-1), u_b, u)
        record = FilterRecord(
            barrier=hx,
            active=active[:, :k],
            intervention=(u.detach() - u_ref.detach()).norm(dim=-1),
            slack=slack,
            status=sol.status,
            names=self.constraints.names,
            corrections=corrections,
            fallback=fallback,
        )
        return u, record

    def _in_certified_set_torch(self, x: Tensor, u: Tensor, x_next: Tensor | None = None) -> Tensor:
        """``(B,)`` bool: with an implicit backup set, is the model's next sample under ``u (B, m)`` in it;
        otherwise, is ``x (B, n)`` in the HOCBF safe set. ``x_next (B, n)``: the sampled-data prediction's next
        sample under ``u``, reused when it is over the backup's period (else the model steps here)."""
        c = self.constraints
        if c.backup is None or not c.backup.implicit:
            return c.in_safe_set(x)
        if x_next is None or self.sampling is None or self.sampling.dt != c.backup.dt:
            x_np = c.model.step_numpy(x.double().numpy(), u.double().numpy(), c.backup.dt)
        else:
            x_np = x_next.double().numpy()
        return torch.from_numpy(keeps(c, x_np))

    def _in_certified_set(
        self, x: np.ndarray, u: np.ndarray, levels: np.ndarray | None, x_next: np.ndarray | None = None
    ) -> bool:
        """:meth:`_in_certified_set_torch` at one state ``x (n,)`` under ``u (m,)``; ``levels (K, R)`` the HOCBF
        safe set's at ``x``; ``x_next (n,)``: the sampled-data prediction's next sample under ``u``, reused when
        it is over the backup's period (else the model steps here)."""
        c = self.constraints
        if c.backup is None or not c.backup.implicit:
            return not bool((levels < -SAFE_SET_TOL).any())
        if x_next is None or self.sampling is None or self.sampling.dt != c.backup.dt:
            x_next = c.model.step_numpy(x[None], u[None], c.backup.dt)[0]
        return bool(keeps(c, x_next[None])[0])

    def _fallback_numpy(self, x: np.ndarray, u: np.ndarray) -> np.ndarray:
        """What the layer sends instead of the QP's ``u (m,)`` at ``x (n,)``: the backup's input; with an
        implicit backup set, the largest blend ``s u + (1 - s) u_b`` (``s`` in :data:`BLEND`) whose next sample
        is still in the set, so that a proposal only partly unsafe is not stopped whole (the backup, ``s = 0``,
        always is: its rollout is the tail of the current state's)."""
        c = self.constraints
        assert c.backup is not None
        u_b = np.asarray(c.backup.control(x[None]), dtype=np.float64)[0]
        if c.backup.implicit:
            for share in BLEND:
                blend = share * u + (1.0 - share) * u_b
                if keeps(c, c.model.step_numpy(x[None], blend[None], c.backup.dt))[0]:
                    return blend
        return u_b

    def _predict_torch(self, x: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
        """The model's next sample with ``u (B, m)`` held from ``x (B, n)``, and its barriers:
        ``(h (B, K), x_next (B, n))``."""
        s, c = self.sampling, self.constraints
        assert s is not None
        with torch.no_grad():
            x_next = c.model.step(x.detach(), u.to(x.dtype), s.dt)
            return c.values(x_next), x_next

    def _robust_torch(self, x: Tensor, u: Tensor) -> tuple[Tensor, Tensor | None, Tensor]:
        """:meth:`_robust_numpy` for a batch: ``(h (B, K), J (B, K, m) or None, x_next (B, n))``."""
        s = self.sampling
        assert s is not None
        h0, x_next = self._predict_torch(x, u)
        if s.disturbance is None:
            return h0, None, x_next
        J = self._sensitivity_torch(x, u, h0)
        return h0 - J.abs() @ torch.as_tensor(s.disturbance, dtype=h0.dtype), J, x_next

    def _sensitivity_torch(self, x: Tensor, u: Tensor, h0: Tensor) -> Tensor:
        """``J (B, K, m)``: how the prediction ``h0`` at ``u`` changes with ``u`` (forward differences, one
        prediction of the batch per input, so that barriers written for this batch size keep working)."""
        cols = []
        for i in range(self._m):
            du = torch.zeros_like(u)
            du[:, i] = self._delta
            cols.append((self._predict_torch(x, u + du)[0] - h0) / self._delta)
        return torch.stack(cols, -1)

    def _check_torch(self, x: Tensor, u_ref: Tensor, gains: Tensor | None, h_diag: Tensor | None) -> None:
        model = self.constraints.model
        check_tensor("x", x, ("B", model.state_dim))
        batch = x.shape[0]
        check_tensor(self.action_name, u_ref, (batch, model.control_dim))
        if u_ref.dtype != x.dtype:
            raise TypeError(f"{self.action_name} must have x's dtype {x.dtype}, got {u_ref.dtype}")
        if self._reference_limit is not None:
            self._check_scale(float(u_ref.detach().abs().max()) if u_ref.numel() else 0.0, u_ref.dtype)
        if gains is not None:
            check_tensor("gains", gains, (batch, self.gain_count))
            if bool((gains <= 0).any()):
                raise ValueError("gains must be positive (class-K); use softplus or a scaled sigmoid on the head")
        if h_diag is not None:
            check_tensor("h_diag", h_diag, (batch, model.control_dim))
            if bool((h_diag <= 0).any()):
                raise ValueError("h_diag must be positive (the QP's quadratic term must be positive definite)")

    def _check_scale(self, largest: float, dtype: torch.dtype) -> None:
        """A ``ValueError`` naming the reference if ``largest`` (its largest magnitude) is beyond 1e6 (float64;
        100 in float32) times the input bounds' scale ``1 + max |u_min|, |u_max|``."""
        factor = 1e6 if dtype == torch.float64 else 1e2
        if largest > factor * self._reference_limit:
            raise ValueError(
                f"{self.action_name} reaches {largest:.3g}, beyond {factor:g} x the input bounds' scale "
                f"{self._reference_limit:g} ({dtype}); expected an action on the bounds' scale"
            )

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
        if self._reference_limit is not None:
            self._check_scale(float(np.abs(u_ref).max()), torch.float64)
        if gains is not None:
            gains = _gains(self, gains)
        G, b, hx, levels = self._rows_numpy(x, gains)
        k = b.shape[0]
        q = -u_ref[None]

        def solve(rows: np.ndarray, rhs_b: np.ndarray) -> tuple[np.ndarray, ...]:
            return solve_qp_numpy(self._eye, q, rows[None], rhs_b[None], self._lb, self._ub, self.settings)

        u, slack, status, lam = solve(G, b)
        corrections, verified, x_next = 0, True, None
        sp = self.sampling
        if sp is not None and k and sp.tries:
            target = sp.target(hx)
            h0, J, x_next = self._robust_numpy(x, u[0])
            G_all, b_all = G, b
            for i in range(sp.tries):
                if (h0 >= target).all():
                    break
                corrections += 1
                if J is None:
                    J = self._sensitivity_numpy(x, u[0], h0)
                G_d, b_d = discrete_rows(h0, J, u[0], target, OVERSHOOT * 2**i)
                G_all, b_all = np.concatenate([G_all, G_d]), np.concatenate([b_all, b_d])
                u, slack_all, status, lam = solve(G_all, b_all)
                slack = slack_all.reshape(1, -1, k).max(1)
                h0, J, x_next = self._robust_numpy(x, u[0])
            verified = bool((h0 >= target).all())
        fallback = status[0] != OPTIMAL or not verified or not self._in_certified_set(x, u[0], levels, x_next)
        if fallback and c.backup is not None:
            u = self._fallback_numpy(x, u[0])[None]
        return u[0], self._record(hx, lam[:, :k], u[0], u_ref, slack, status, corrections, fallback)

    def _record(
        self, hx: np.ndarray, lam: np.ndarray, u: np.ndarray, u_ref: np.ndarray, slack: np.ndarray,
        status: np.ndarray, corrections: int, fallback: bool,
    ) -> FilterRecord:  # fmt: skip
        """The batch-1 :class:`FilterRecord` of :meth:`project` (``lam (1, K)`` the continuous rows')."""
        return FilterRecord(
            barrier=hx[None],
            active=lam > ACTIVE,
            intervention=np.array([math.sqrt(float(np.dot(u - u_ref, u - u_ref)))]),
            slack=slack,
            status=status.astype(np.int64),
            names=self.constraints.names,
            corrections=np.array([corrections]),
            fallback=np.array([fallback]),
        )

    def _predicted_ok(self, x: np.ndarray, u: np.ndarray, hx: np.ndarray) -> tuple[bool, np.ndarray | None]:
        """Does the model's next sample from ``x (n,)`` under ``u (m,)`` meet the discrete-time target (True
        without a sampled-data correction)? With that next sample ``(n,)`` (None without a prediction)."""
        sp = self.sampling
        if sp is None or not sp.tries or not hx.size:
            return True, None
        h, _, x_next = self._robust_numpy(x, u)
        return bool((h >= sp.target(hx)).all()), x_next

    def _sensitivity_numpy(self, x: np.ndarray, u: np.ndarray, h0: np.ndarray) -> np.ndarray:
        """``J (K, m)``: how the prediction ``h0 (K,)`` at ``u (m,)`` changes with ``u`` (forward differences)."""
        U = u + self._delta * np.eye(self._m)
        return ((self._predict_numpy(x, U) - h0) / self._delta).T

    def _robust_numpy(self, x: np.ndarray, u: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """The prediction at ``u (m,)``, less the worst matched disturbance's first-order effect where the
        layer has one: ``(h (K,), J (K, m) or None, x_next (n,))`` (``J`` computed only then; ``x_next`` the
        predicted next sample)."""
        sp = self.sampling
        assert sp is not None
        c = self.constraints
        x_next = c.model.step_numpy(x[None], u[None], sp.dt)
        h0 = c.values_numpy(x_next)[0]  # = _predict_numpy(x, u[None])[0], keeping the state
        if sp.disturbance is None:
            return h0, None, x_next[0]
        J = self._sensitivity_numpy(x, u, h0)
        return h0 - np.abs(J) @ np.asarray(sp.disturbance), J, x_next[0]

    def _predict_numpy(self, x: np.ndarray, U: np.ndarray) -> np.ndarray:
        """The model's barriers at the next sample from one state ``x (n,)`` under each input of ``U (J, m)``:
        ``h (J, K)`` (one batched prediction)."""
        assert self.sampling is not None
        return self.constraints.predict_numpy(x, U, self.sampling.dt)

    def _rows_numpy(
        self, x: np.ndarray, gains: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(G (K, m), b (K,), h (K,), levels (K, R))`` at one state, ``levels`` the safe set's
        (:meth:`ConstraintSet.safe_set_levels`; None with an implicit backup set, whose test does not read
        them): from the gain-free terms (linear class-K), else through
        :meth:`ConstraintSet.rows` in torch."""
        c = self.constraints
        if not len(c.barriers):
            return np.zeros((0, self._m)), np.zeros(0), np.zeros(0), np.zeros((0, 1))
        if not c.linear:
            flat = None if gains is None else torch.from_numpy(gains[None])
            G, b, h = c.rows(torch.from_numpy(x[None]), flat)
            h = h[0].detach().numpy()
            return G[0].detach().numpy(), b[0].detach().numpy(), h, h[:, None]
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
        implicit = c.backup is not None and c.backup.implicit
        return -A[0], (coeff * L[0]).sum(-1), L[0, :, 0], None if implicit else c.levels_from_terms(L[0])


def project_many(
    layers: list[BarrierLayer], x: np.ndarray, u_ref: np.ndarray, gains: list[np.ndarray] | None = None
) -> tuple[np.ndarray, list[FilterRecord]]:
    """:meth:`BarrierLayer.project` for ``N`` states of ``N`` scenes at once (a vector environment): ``x (N, n)``,
    ``u_ref (N, m)``, one layer per row, ``gains`` one ``(gain_count,)`` array per row (its layer's count) or
    None (default gains) -> ``(u_safe (N, m), records)``. The rows of every scene, padded to the largest, go to
    **one** QP solve; a scene whose solve is not optimal, whose prediction misses the discrete-time target or
    whose state is outside its safe set then takes the single-scene path (its sampled-data cuts and fallback),
    so the results are :meth:`BarrierLayer.project`'s."""
    if len(layers) != x.shape[0] or u_ref.shape[0] != x.shape[0] or (gains is not None and len(gains) != len(layers)):
        raise ValueError(
            f"project_many needs one layer (and gain vector) per state, got {len(layers)} layers, x {x.shape}, "
            f"u_ref {u_ref.shape}" + ("" if gains is None else f", {len(gains)} gain vectors")
        )
    n_envs, m = u_ref.shape
    if not np.isfinite(u_ref).all():
        raise ValueError(f"{layers[0].action_name} contains NaN or inf; expected finite values")
    per_env = [None] * n_envs if gains is None else [_gains(layer, g) for layer, g in zip(layers, gains, strict=True)]
    parts = [
        layer._rows_numpy(_vector("x", xi, layer.constraints.model.state_dim), gi)
        for layer, xi, gi in zip(layers, x, per_env, strict=True)
    ]
    k_max = max(p[1].shape[0] for p in parts)
    G = np.zeros((n_envs, k_max, m))
    b = np.full((n_envs, k_max), PAD_RHS)
    for i, (Gi, bi, _, _) in enumerate(parts):
        G[i, : bi.shape[0]], b[i, : bi.shape[0]] = Gi, bi
    if any(layer._lb is None or layer._ub is None for layer in layers):
        raise ValueError("project_many needs input bounds (u_min and u_max) on every constraint set")
    bounds = [np.concatenate([layer._lb for layer in layers]), np.concatenate([layer._ub for layer in layers])]
    eye = np.broadcast_to(np.eye(m), (n_envs, m, m)).copy()
    u, slack, status, lam = solve_qp_numpy(eye, -np.asarray(u_ref, np.float64), G, b, *bounds, layers[0].settings)
    out, records = u.copy(), []
    for i, (layer, (_, bi, hx, levels)) in enumerate(zip(layers, parts, strict=True)):
        k = bi.shape[0]
        ok, x_next = layer._predicted_ok(x[i], u[i], hx) if status[i] == OPTIMAL else (False, None)
        simple = ok and layer._in_certified_set(np.asarray(x[i], np.float64), u[i], levels, x_next)
        if simple:
            records.append(
                layer._record(hx, lam[i : i + 1, :k], u[i], u_ref[i], slack[i : i + 1, :k], status[i : i + 1], 0, False)
            )
        else:
            out[i], record = layer.project(x[i], u_ref[i], per_env[i])
            records.append(record)
    return out, records


def _gains(layer: BarrierLayer, gains: np.ndarray) -> np.ndarray:
    """``gains`` checked as :meth:`BarrierLayer.project` checks them: ``(gain_count,)`` finite and positive."""
    gains = _vector("gains", gains, layer.gain_count)
    if (gains <= 0).any():
        raise ValueError("gains must be positive (class-K); use softplus or a scaled sigmoid on the head")
    return gains


def _vector(name: str, a: np.ndarray, size: int) -> np.ndarray:
    """``a`` as a finite float64 vector of ``size`` entries, or a ``ValueError`` naming it."""
    a = np.asarray(a, dtype=np.float64)
    if a.shape != (size,):
        raise ValueError(f"{name} must have shape ({size},), got {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} contains NaN or inf; expected finite values")
    return a
