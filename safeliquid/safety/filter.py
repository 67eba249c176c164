"""The safety filter and the BarrierNet layer: project an action into the safe set with the CBF-QP.

Both solve, per state, ``min_u 1/2 (u - u_ref)' H (u - u_ref)  s.t.  G u <= b
(the HOCBF rows), u_min <= u <= u_max`` with :func:`safeliquid.qp.solve_qp`
(rows elastic, bounds hard). The filter uses fixed class-K gains and reports
what it did; the layer takes learned gains and is differentiable in ``u_ref``,
the gains and ``H``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from safeliquid._checks import check_tensor
from safeliquid.qp import STATUS_NAMES, QPSolution, solve_qp
from safeliquid.safety.constraints import ConstraintSet

_ROUNDING = {torch.float64: 1e-10, torch.float32: 1e-5}


@dataclass
class FilterRecord:
    """What the filter did, per sample. Barrier values keep the CBF sign (``>= 0`` safe).

    ``barrier (B, K)`` values ``h_k(x)``; ``active (B, K)`` rows at their bound;
    ``intervention (B,)`` ``|u_safe - u_raw|``; ``slack (B, K)`` row violation the
    QP had to accept (0 unless infeasible); ``status (B,)`` QP status (0 optimal,
    1 infeasible: ``u_safe`` minimises the violation within the input bounds).
    """

    barrier: Tensor
    active: Tensor
    intervention: Tensor
    slack: Tensor
    status: Tensor
    names: list[str]

    def status_names(self) -> list[str]:
        return [STATUS_NAMES.get(int(s), "unknown") for s in self.status]


def _solve(
    constraints: ConstraintSet,
    x: Tensor,
    u_ref: Tensor,
    gains: Tensor | None,
    h_diag: Tensor | None,
    dt: float | None = None,
    gamma: float = 1.0,
    tries: int = 6,
    margin: float = 0.0,
) -> tuple[Tensor, FilterRecord]:
    """The filter's QP for ``x (B, n)``, ``u_ref (B, m)``; ``margin``: see :class:`SafetyFilter`."""
    G, b, hx = constraints.rows(x, gains)
    sol = _qp(constraints, G, b, u_ref, h_diag)
    if dt is not None:
        # Sampled-data correction: with u held for dt, the continuous condition at the
        # sample does not bound h at the next sample. Predict it with the model and,
        # for every row whose prediction breaks the discrete-time CBF condition
        # h(x+) >= (1 - gamma) h(x), tighten that row by the margin that closes the
        # deficit (an extra e on psi_r raises h(x+) by about e dt^r / r!), and re-solve.
        # A hair above the bound, so that rounding at h = 0 cannot land on the unsafe side.
        target = (1.0 - gamma) * hx.clamp_min(0.0) + _ROUNDING[b.dtype] * (1.0 + hx.abs()) + margin
        tighten = torch.zeros_like(b)
        for _ in range(tries):
            step = next_tightening(constraints, x, sol.u.detach(), dt, target, tighten)
            if step is None:
                break
            tighten = step
            sol = _qp(constraints, G, b - tighten, u_ref, h_diag)
    tight = sol.lam.detach() > 1e-9 if sol.lam is not None else torch.zeros_like(b, dtype=torch.bool)
    record = FilterRecord(
        barrier=hx,
        active=tight,
        intervention=(sol.u.detach() - u_ref.detach()).norm(dim=-1),
        slack=sol.slack,
        status=sol.status,
        names=constraints.names,
    )
    return sol.u, record


def next_tightening(
    constraints: ConstraintSet, x: Tensor, u: Tensor, dt: float, target: Tensor, tighten: Tensor
) -> Tensor | None:
    """One step of the sampled-data correction: predict ``h`` at the next sample with ``u (B, m)`` held
    from ``x (B, n)``; if some barrier falls below ``target (B, K)``, return ``tighten (B, K)`` (subtracted
    from the rows' right-hand sides) grown by what closes the deficit, else ``None``. An extra ``e`` on
    ``psi_r`` raises ``h(x+)`` by about ``e dt^r / r!``."""
    with torch.no_grad():
        h_next = constraints.values(constraints.model.step(x, u.to(x.dtype), dt))
        deficit = (target - h_next).clamp_min(0.0)
    if not bool((deficit > 0).any()):
        return None
    degree = constraints.degrees.to(target.dtype)
    return tighten + 1.5 * deficit / (dt**degree / torch.exp(torch.lgamma(degree + 1)))


def _qp(constraints: ConstraintSet, G: Tensor, b: Tensor, u_ref: Tensor, h_diag: Tensor | None) -> QPSolution:
    m = u_ref.shape[1]
    if h_diag is None:
        Q = torch.eye(m, dtype=u_ref.dtype)
        q = -u_ref
    else:
        Q = torch.diag_embed(h_diag)
        q = -(h_diag * u_ref)
    return solve_qp(Q, q, G, b, constraints.u_min, constraints.u_max)


class SafetyFilter:
    """Filter raw actions with fixed class-K gains (each barrier's defaults): a drop-in safety layer.

    ``filter(x (B, n), u_raw (B, m)) -> (u_safe (B, m), FilterRecord)``; batch 1
    for control loops, batched for training or vectorised environments. Raises
    ``ValueError`` on NaN/inf or wrongly shaped states and actions.

    ``dt``: the control period when actions are held between samples (zero-order
    hold). The continuous CBF condition then does not bound the barrier at the next
    sample; the filter predicts it with the model and tightens the rows until the
    discrete-time condition ``h(x+) >= (1 - gamma) h(x)`` holds (see ``_solve``).
    ``None`` enforces the continuous-time condition only.

    ``margin``: robustness to model error, in barrier units: the predicted barrier at
    the next sample must reach ``margin`` above the discrete-time bound, so that a
    simulator (or robot) that differs from the model by less than ``margin`` per
    step still keeps ``h >= 0``. Needs ``dt``; ``None`` takes the constraint set's
    ``sample_margin`` when ``dt`` is given (else 0).
    """

    def __init__(
        self, constraints: ConstraintSet, dt: float | None = None, gamma: float = 1.0, margin: float | None = None
    ) -> None:
        if margin is None:
            margin = constraints.sample_margin if dt is not None else 0.0
        if dt is not None and not dt > 0:
            raise ValueError(f"dt must be positive, got {dt}")
        if not 0 < gamma <= 1:
            raise ValueError(f"gamma must be in (0, 1], got {gamma}")
        if not margin >= 0 or (margin > 0 and dt is None):
            raise ValueError(f"margin must be >= 0 and needs dt, got margin={margin}, dt={dt}")
        self.margin = margin
        self.constraints = constraints
        self.model = constraints.model
        self.dt, self.gamma = dt, gamma

    def filter(self, x: Tensor, u_raw: Tensor) -> tuple[Tensor, FilterRecord]:
        check_tensor("x", x, ("B", self.model.state_dim))
        check_tensor("u_raw", u_raw, (x.shape[0], self.model.control_dim))
        with torch.no_grad():
            u, record = _solve(self.constraints, x, u_raw, None, None, self.dt, self.gamma, margin=self.margin)
        return u.detach(), record


class BarrierLayer(nn.Module):
    """The BarrierNet layer (Xiao, Hasani, Li, Rus 2023) as a module.

    ``forward(x (B, n), u_ref (B, m), gains (B, G) | None, h_diag (B, m) | None)
    -> (u_safe (B, m), FilterRecord)``. ``gains`` are the positive class-K gains a
    policy outputs, ``constraints.gain_count`` of them (one per barrier and HOCBF
    order, barrier order); ``h_diag`` an optional positive diagonal of the QP's
    quadratic term. Differentiable in ``u_ref``, ``gains`` and ``h_diag`` through
    the QP's KKT conditions.
    """

    def __init__(self, constraints: ConstraintSet) -> None:
        super().__init__()
        self.constraints = constraints

    @property
    def gain_count(self) -> int:
        return self.constraints.gain_count

    def forward(
        self, x: Tensor, u_ref: Tensor, gains: Tensor | None = None, h_diag: Tensor | None = None
    ) -> tuple[Tensor, FilterRecord]:
        model = self.constraints.model
        check_tensor("x", x, ("B", model.state_dim))
        batch = x.shape[0]
        check_tensor("u_ref", u_ref, (batch, model.control_dim))
        if gains is not None:
            check_tensor("gains", gains, (batch, self.gain_count))
            if bool((gains <= 0).any()):
                raise ValueError("gains must be positive (class-K); use softplus or a scaled sigmoid on the head")
        if h_diag is not None:
            check_tensor("h_diag", h_diag, (batch, model.control_dim))
            if bool((h_diag <= 0).any()):
                raise ValueError("h_diag must be positive (the QP's quadratic term must be positive definite)")
        return _solve(self.constraints, x, u_ref, gains, h_diag)
