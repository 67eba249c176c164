"""The certified safe set under input limits: its backup controller and the sampled certification test.

A constraint set with input bounds ``U`` promises safety only on a set ``S`` that is **control invariant
under U**: from every state of ``S`` some admissible input keeps the state in ``S``. The safe set the
layer uses is the HOCBF set with each barrier's default gains,

    S = {x : psi_{k,i}(x) >= 0 for every barrier k and order i < r_k}    ({h_k >= 0} for relative degree 1),

(:meth:`ConstraintSet.in_safe_set`). Two things make a set certified here:

1. **Feasibility** (the CBF condition under input limits): at every state of ``S`` some ``u in U``
   satisfies every barrier's row, ``sup_{u in U} min_k [b_k(x) - G_k(x) u] >= 0`` with the default gains.
   For a barrier whose last-order term is ``+ alpha psi_{r-1}`` with ``psi_{r-1} >= 0`` on ``S``, a larger
   last-order gain only relaxes its row, so feasibility at the default gain holds for every larger one.
2. **A backup** (optional, :class:`Backup`): a controller ``u_b(x) in U`` held for the control period
   under which ``S`` is invariant in discrete time (Gurriet et al. 2020's backup set, with the flow of one
   period). It is the witness of (1) at the sample, and the layer's **fallback**: wherever the QP cannot
   meet its rows, or the state is outside ``S`` (after a disturbance beyond the margin, or a reset), the
   layer sends ``u_b`` and reports it, instead of the least-violating QP solution.

Where no closed-form barrier set is control invariant under the bounds (CartPoleRail: a spinning pole
takes the force the cart needs to brake), a backup with a ``horizon`` defines the certified set instead:
its **implicit safe set** (:mod:`safeliquid.safety.backup_set`), the states from which the backup's rollout
stays safe and reaches a terminal set. That set is invariant under the backup by construction; the layer
sends the QP's input only when its next sample stays in the set, and the QP's rows need not be feasible
(where they are not, the backup acts, reported).

:func:`certify` tests both on sampled states of ``S``; :class:`ConstraintSet` runs it at construction when
the set has input bounds, and warns (or raises, ``certify="error"``) naming the constraint and a sampled
state from which no admissible input satisfies it. A sampled test is evidence, not a proof: the
environments' docs give the argument for their own sets (:mod:`safeliquid.safety.braking` for Navigate).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from safeliquid.qp import OPTIMAL, solve_qp
from safeliquid.safety.backup_set import keeps, rollout

if TYPE_CHECKING:
    from safeliquid.safety.constraints import ConstraintSet

CERTIFY_MODES = ("warn", "error", "off")
SAFE_SET_TOL = 1e-9  # psi >= -SAFE_SET_TOL counts as inside the safe set (rounding at the boundary)
TERMINAL_PERIODS = 4  # an implicit set's terminal states are tested for this many horizons more
INVARIANCE_TOL = 1e-9  # the backup's next sample may sit this far below the safe set's boundary


class UncertifiedWarning(UserWarning):
    """A constraint set's safe set failed the sampled certification test: the layer's guarantee does not
    hold there, and its fallback will act instead."""


@dataclass(frozen=True)
class Backup:
    """A backup controller: ``control(x (B, n)) -> u (B, m)`` within the input bounds (torch or numpy alike,
    the same type back), held for ``dt`` seconds at a time (the control period).

    Without ``horizon`` the HOCBF safe set is the certified set and the backup must keep it invariant one
    period at a time (Navigate's braking). With ``horizon`` > 0 the certified set is the backup's **implicit
    safe set** (Gurriet et al. 2020; :mod:`safeliquid.safety.backup_set`): the states from which the backup,
    rolled out with the model for at most ``horizon`` periods, keeps every barrier ``>= margin`` at every
    sample and reaches ``terminal``, a set from which it keeps every barrier for ever
    (``terminal(x (B, n)) -> (B,)`` bool, numpy). ``keeps``: an optional compiled form of that rollout test,
    ``x (B, n) numpy -> (B,)`` bool, held equal to the generic one by the environment's tests.

    ``clearance`` (barrier units, >= 0): how far above the model's ``sample_margin`` the layer's QP keeps each
    barrier at the next sample when this backup is in use, the room the backup's braking needs from where the
    QP leaves the state. Without it a policy that slides along a barrier at ``h ~ 0`` can leave every next
    sample where the backup's braking path (straight for one point, curved for the others) dips below
    ``margin``: each proposal then fails the set test, the backup holds the state at rest, and it never moves
    again (ArmReach's shipped policy did, on 2 of 200 held-out episodes)."""

    control: Callable[[Any], Any]
    dt: float
    horizon: int = 0
    terminal: Callable[[np.ndarray], np.ndarray] | None = None
    margin: float = 0.0
    keeps: Callable[[np.ndarray], np.ndarray] | None = None
    clearance: float = 0.0

    def __post_init__(self) -> None:
        if not callable(self.control):
            raise TypeError(f"Backup.control must be callable, got {type(self.control).__name__}")
        if not (math.isfinite(self.dt) and self.dt > 0):
            raise ValueError(f"Backup.dt must be a positive finite number (s), got {self.dt}")
        if not (isinstance(self.horizon, int) and self.horizon >= 0):
            raise ValueError(f"Backup.horizon must be an integer >= 0 (control periods), got {self.horizon!r}")
        if self.horizon and not callable(self.terminal):
            raise ValueError("Backup.terminal must be given (a callable x -> bool) when horizon > 0")
        if not (math.isfinite(self.margin) and self.margin >= 0):
            raise ValueError(f"Backup.margin must be a finite number >= 0 (barrier units), got {self.margin}")
        if not (math.isfinite(self.clearance) and self.clearance >= 0):
            raise ValueError(f"Backup.clearance must be a finite number >= 0 (barrier units), got {self.clearance}")
        if self.keeps is not None and not callable(self.keeps):
            raise TypeError(f"Backup.keeps must be callable or None, got {type(self.keeps).__name__}")

    @property
    def implicit(self) -> bool:
        """Does this backup define an implicit safe set (``horizon`` > 0)?"""
        return self.horizon > 0


@dataclass
class Failure:
    """One sampled state of the safe set where the certificate fails: ``what`` failed (``"feasibility"``:
    no admissible input meets the rows; ``"backup bounds"``; ``"backup invariance"``: the backup leaves the
    set; ``"terminal safety"``: the backup held on from an implicit safe set's terminal set breaks a
    barrier), the ``constraint`` most to blame, the ``state (n,)`` and how far off (``amount``, barrier
    units)."""

    what: str
    constraint: str
    state: np.ndarray
    amount: float

    def describe(self) -> str:
        state = np.array2string(self.state, precision=4, separator=", ", max_line_width=10**6)
        if self.what == "feasibility":
            how = f"no input within the bounds satisfies its CBF row (short by {self.amount:.3g})"
        elif self.what == "backup bounds":
            how = f"the backup controller leaves the input bounds (by {self.amount:.3g})"
        elif self.what == "terminal safety":
            how = (
                f"the backup, held on after its rollout reaches the terminal set, then breaks it (by {self.amount:.3g})"
            )
        else:
            how = f"the backup controller, held one period, leaves the safe set (short by {self.amount:.3g})"
        return f"constraint {self.constraint!r} is not certified under the input bounds: at the state {state}, {how}"


@dataclass
class Certificate:
    """The result of :func:`certify`: ``checked`` sampled states inside the safe set (``sampled`` in all) and the
    ``failures`` among them (empty: certified on the sample)."""

    sampled: int
    checked: int
    failures: list[Failure] = field(default_factory=list)

    @property
    def certified(self) -> bool:
        return self.checked > 0 and not self.failures


def certify(constraints: ConstraintSet, states: Tensor) -> Certificate:
    """Test the certificate (see the module docstring) on ``states (N, n)``; those outside the safe set are
    skipped. Needs input bounds; the QP is solved in float64 with the default gains."""
    c = constraints
    if c.u_min is None or c.u_max is None:
        raise ValueError("certify needs a constraint set with input bounds u_min and u_max")
    states = states.detach().double()
    if c.backup is not None and c.backup.implicit:
        return _certify_implicit(c, states)
    inside = c.in_safe_set(states)
    x = states[inside]
    out = Certificate(sampled=int(states.shape[0]), checked=int(x.shape[0]))
    if not out.checked or not c.barriers:
        return out
    with torch.no_grad():
        G, b, _ = c.rows(x)
        G, b = G.detach(), b.detach()
        lb, ub = c.u_min.double(), c.u_max.double()
        m = G.shape[-1]
        sol = solve_qp(torch.eye(m, dtype=torch.float64), x.new_zeros(x.shape[0], m), G, b, lb, ub)
        short = (torch.bmm(G, sol.u.unsqueeze(-1)).squeeze(-1) - b).clamp_min(0.0)
        for i in torch.nonzero(sol.status != OPTIMAL).flatten().tolist():
            k = int(short[i].argmax())
            out.failures.append(Failure("feasibility", c.names[k], x[i].numpy(), float(short[i, k])))
        if c.backup is not None:
            _check_backup(c, x, lb, ub, out)
    return out


def _check_backup(c: ConstraintSet, x: Tensor, lb: Tensor, ub: Tensor, out: Certificate) -> None:
    assert c.backup is not None
    u = torch.as_tensor(c.backup.control(x), dtype=torch.float64)
    if u.shape != (x.shape[0], c.model.control_dim):
        raise ValueError(
            f"the backup controller must return ({x.shape[0]}, {c.model.control_dim}) inputs, got {tuple(u.shape)}"
        )
    excess = torch.maximum(u - ub, lb - u).amax(-1)
    for i in torch.nonzero(excess > 1e-9 * (1.0 + ub.abs().max())).flatten().tolist():
        out.failures.append(Failure("backup bounds", "input bounds", x[i].numpy(), float(excess[i])))
    x_next = c.model.step(x, u, c.backup.dt)
    psi = c.safe_set_levels(x_next).amin(-1)  # (N, K): each barrier's lowest level at the next sample
    for i in torch.nonzero((psi < -INVARIANCE_TOL).any(-1)).flatten().tolist():
        k = int(psi[i].argmin())
        out.failures.append(Failure("backup invariance", c.names[k], x[i].numpy(), float(-psi[i, k])))


def _certify_implicit(c: ConstraintSet, states: Tensor) -> Certificate:
    """The certificate of a backup's implicit safe set (:mod:`safeliquid.safety.backup_set`), on the sampled
    states inside it: the backup within the bounds; its next sample inside the set again (the tail property
    the horizon and the terminal set must give); and every barrier kept ``>= margin`` for
    :data:`TERMINAL_PERIODS` times the horizon after each rollout reaches the terminal set. The QP's rows need
    not be feasible there: where they are not, the backup acts."""
    assert c.backup is not None and c.u_min is not None and c.u_max is not None
    x_all = states.numpy()
    inside = keeps(c, x_all)
    x = x_all[inside]
    out = Certificate(sampled=int(states.shape[0]), checked=int(x.shape[0]))
    if not out.checked:
        return out
    lb, ub = c.u_min.double().numpy(), c.u_max.double().numpy()
    u = np.asarray(c.backup.control(x), dtype=np.float64)
    if u.shape != (x.shape[0], c.model.control_dim):
        raise ValueError(
            f"the backup controller must return ({x.shape[0]}, {c.model.control_dim}) inputs, got {tuple(u.shape)}"
        )
    excess = np.maximum(u - ub, lb - u).max(-1)
    for i in np.flatnonzero(excess > 1e-9 * (1.0 + np.abs(ub).max())):
        out.failures.append(Failure("backup bounds", "input bounds", x[i], float(excess[i])))
    for i in np.flatnonzero(~keeps(c, c.model.step_numpy(x, u, c.backup.dt))):
        out.failures.append(Failure("backup invariance", "backup set", x[i], 0.0))
    _, state = rollout(c, x)  # where each rollout reached the terminal set
    end = state.copy()
    for _ in range(TERMINAL_PERIODS * c.backup.horizon):
        state = c.model.step_numpy(state, np.asarray(c.backup.control(state), dtype=np.float64), c.backup.dt)
        h = c.values_numpy(state)
        lost = (h < c.backup.margin).any(-1)
        if lost.any():
            i = int(np.flatnonzero(lost)[0])
            k = int(h[i].argmin())
            out.failures.append(Failure("terminal safety", c.names[k], end[i], float(c.backup.margin - h[i, k])))
            break
    return out


def sample_box(low: np.ndarray, high: np.ndarray, count: int, seed: int = 0) -> Tensor:
    """``count`` states uniform in the box ``[low, high]`` (float64, a fixed seed: the same test every time)."""
    rng = np.random.default_rng(seed)
    return torch.as_tensor(rng.uniform(low, high, (count, len(low))), dtype=torch.float64)


_WARNED: set[str] = set()


def report(constraints: ConstraintSet, certificate: Certificate, mode: str) -> None:
    """Warn (once per model type in a process: scenes, and so the failing states, change each episode) or raise."""
    if certificate.certified or mode == "off" or not certificate.failures:
        return
    first = certificate.failures[0]
    message = (
        f"{first.describe()} ({len(certificate.failures)} of {certificate.checked} sampled safe states fail); "
        "outside the certified set the layer applies its fallback"
        + (" (the backup controller)" if constraints.backup is not None else " (the least-violating input)")
    )
    if mode == "error":
        raise ValueError(message)
    key = type(constraints.model).__name__
    if key not in _WARNED:
        _WARNED.add(key)
        warnings.warn(message, UncertifiedWarning, stacklevel=3)
