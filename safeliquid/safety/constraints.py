"""A set of safety constraints for one model: barriers (rows of the QP) and input bounds."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from safeliquid._checks import check_tensor
from safeliquid.safety.barriers import Barrier, find_relative_degree, hocbf_row_at, lie_derivatives
from safeliquid.safety.certify import CERTIFY_MODES, SAFE_SET_TOL, Backup, Certificate, report, sample_box
from safeliquid.safety.certify import certify as run_certification
from safeliquid.safety.models import ControlAffine


def _bound(name: str, value: Tensor | Sequence[float] | None, m: int, dtype: torch.dtype) -> Tensor | None:
    """An input bound as an ``(m,)`` tensor (a number is shared by every input), or ``ValueError`` naming it."""
    if value is None:
        return None
    try:
        t = torch.as_tensor(value, dtype=dtype).reshape(-1)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"{name} must be {m} numbers (one per input), got {value!r}") from None
    if t.numel() == 1:
        t = t.expand(m).clone()
    if t.numel() != m:
        raise ValueError(f"{name} must have {m} entries (one per input of the model), got {t.numel()}")
    if torch.isnan(t).any():
        raise ValueError(f"{name} contains NaN; expected numbers (inf for no bound)")
    return t


class ConstraintSet:
    """Barriers ``h_k(x) >= 0`` and input bounds ``u_min <= u <= u_max`` for ``model``, validated at construction.

    ``samples (B, n)``: states on which each barrier is checked (shape, finiteness,
    relative degree, non-vanishing input gain ``L_g L_f^{r-1} h``); errors name the
    constraint. Input bounds are hard bounds of the QP, not barriers.

    ``fast_terms``: an optional closed-form ``x (B, n) -> (A (B, K, m), L (B, K, R+1))``
    for :meth:`terms` (autograd costs milliseconds per control step on small
    models). It is checked against the autograd result on ``samples`` here and
    rejected, naming the first disagreeing constraint, if they differ by more than
    ``fast_terms_tol`` (``(rtol, atol)``; loosen it only for a closed form that reads a
    simulator's own, less exact kinematics).

    ``sample_margin`` (barrier units, >= 0): how far the model's one-period prediction
    of a barrier may be from the plant's (an environment sets it from its integrator);
    sampled-data corrections (:class:`SafetyFilter`, the policies' run-time layer)
    demand this much more than ``h(x+) >= 0`` at the next sample.

    ``fast_values``: an optional closed form ``x (B, n) numpy -> h (B, K)`` for :meth:`values_numpy` (the
    sampled-data prediction evaluates barriers at predicted states every control step; the terms cost more
    where they need Jacobians), checked against :meth:`values` on ``samples`` with ``fast_terms_tol``.

    ``backup``: a :class:`~safeliquid.safety.certify.Backup` controller under which the safe set is invariant
    (the layer's fallback). ``certify`` (``"warn"``, ``"error"`` or ``"off"``): with input bounds, test at
    construction that the safe set is certified under them (:mod:`safeliquid.safety.certify`) on ``samples``
    and, with ``state_bounds`` ``(low (n,), high (n,))`` (the state range the system can reach), on
    ``certify_samples`` more states drawn in that box; a failure warns (:class:`UncertifiedWarning`) or
    raises, naming the constraint and a sampled state. The result is :attr:`certificate`. ``certificate``: the
    :attr:`certificate` of an earlier, identical constraint set, to reuse instead of testing again (an
    environment whose reset rebuilds the same set; reported as if just tested).
    """

    def __init__(
        self,
        model: ControlAffine,
        barriers: Sequence[Barrier],
        samples: Tensor,
        u_min: Tensor | Sequence[float] | None = None,
        u_max: Tensor | Sequence[float] | None = None,
        fast_terms: Callable[[Tensor], tuple[Tensor, Tensor]] | None = None,
        sample_margin: float = 0.0,
        fast_terms_tol: tuple[float, float] = (1e-6, 1e-8),
        fast_values: Callable[[np.ndarray], np.ndarray] | None = None,
        backup: Backup | None = None,
        certify: str = "warn",
        state_bounds: tuple[Sequence[float], Sequence[float]] | None = None,
        certify_samples: int = 256,
        certificate: Certificate | None = None,
    ) -> None:
        check_tensor("samples", samples, ("B", model.state_dim))
        if not (np.isfinite(sample_margin) and sample_margin >= 0):
            raise ValueError(f"sample_margin must be a finite number >= 0 (barrier units), got {sample_margin}")
        self.sample_margin = float(sample_margin)
        model.check(samples)
        names = [b.name for b in barriers]
        if len(set(names)) != len(names):
            raise ValueError(f"constraint names must be unique, got {names}")
        self.model = model
        self.barriers = list(barriers)
        for b in self.barriers:
            found = find_relative_degree(model, b, samples)
            if b.relative_degree is None:
                b.relative_degree = found
            elif b.relative_degree != found:
                raise ValueError(
                    f"constraint {b.name!r}: declared relative degree {b.relative_degree}, "
                    f"but the input first appears in derivative {found} on the sample states"
                )
            if b.gains is not None and len(b.gains) != b.relative_degree:
                raise ValueError(f"constraint {b.name!r}: needs {b.relative_degree} gains, got {len(b.gains)}")
            if b.gains is not None and not all(g > 0 for g in b.gains):
                raise ValueError(f"constraint {b.name!r}: class-K gains must be positive, got {list(b.gains)}")
        m = model.control_dim
        self.u_min = _bound("u_min", u_min, m, samples.dtype)
        self.u_max = _bound("u_max", u_max, m, samples.dtype)
        if self.u_min is not None and self.u_max is not None and bool((self.u_min > self.u_max).any()):
            raise ValueError(f"u_min must not exceed u_max, got {self.u_min.tolist()} > {self.u_max.tolist()}")
        self._degree = torch.tensor([b.relative_degree or 1 for b in self.barriers], dtype=torch.long)
        self.fast_terms = None
        if fast_terms is not None:
            self._check_fast_terms(fast_terms, samples, *fast_terms_tol)
            self.fast_terms = fast_terms
        self.fast_values = None
        if fast_values is not None:
            got = np.asarray(fast_values(samples.detach().double().numpy()))
            want = self.values(samples).detach().double().numpy()
            if got.shape != want.shape or not np.allclose(got, want, *fast_terms_tol):
                worst = float(np.abs(got - want).max()) if got.shape == want.shape else float("nan")
                raise ValueError(
                    f"fast_values must return {want.shape} values that agree with the barriers' h on the samples, "
                    f"got shape {got.shape} (max error {worst:.3g})"
                )
            self.fast_values = fast_values
        # Every barrier's class-K function is linear: the gain-free terms (and so the closed forms) apply.
        self.linear = all(bar.class_k == "linear" for bar in self.barriers)
        top = int(self._degree.max()) if self.barriers else 1
        # Level i of barrier k is sum_j C[k, i, j] L_f^j h with the default gains (the safe set's psi_i).
        self._level_coeff = np.stack(
            [hocbf_coefficients(np.minimum(self._degree.numpy(), i), self.default_gains(top), top) for i in range(top)],
            1,
        )  # (K, R, R+1)
        self._level_valid = np.arange(top)[None, :] < self._degree.numpy()[:, None]  # (K, R)
        if backup is not None and not isinstance(backup, Backup):
            raise TypeError(f"backup must be a safeliquid.safety.Backup, got {type(backup).__name__}")
        self.backup = backup
        self.certificate: Certificate | None = None
        if certify not in CERTIFY_MODES:
            raise ValueError(f"certify must be one of {CERTIFY_MODES}, got {certify!r}")
        if certify != "off" and self.u_min is not None and self.u_max is not None:
            states = samples
            if state_bounds is not None:
                low, high = (np.asarray(b, dtype=np.float64).reshape(model.state_dim) for b in state_bounds)
                if not (np.isfinite(low).all() and np.isfinite(high).all() and (low <= high).all()):
                    raise ValueError(f"state_bounds must be finite (low, high) with low <= high, got {state_bounds}")
                box = sample_box(low, high, certify_samples).to(samples.dtype)
                states = torch.cat([samples.detach(), box])
            self.certificate = run_certification(self, states) if certificate is None else certificate
            report(self, self.certificate, certify)

    def _check_fast_terms(
        self, fast: Callable[[Tensor], tuple[Tensor, Tensor]], samples: Tensor, rtol: float, atol: float
    ) -> None:
        ref = self.terms(samples)
        A, L = fast(samples)
        if A.shape != ref.A.shape or L.shape != ref.L.shape:
            raise ValueError(
                f"fast_terms must return A {tuple(ref.A.shape)} and L {tuple(ref.L.shape)}, "
                f"got {tuple(A.shape)} and {tuple(L.shape)}"
            )
        for k, name in enumerate(self.names):
            for what, got, want in (("A", A[:, k], ref.A[:, k]), ("L", L[:, k], ref.L[:, k])):
                if not torch.allclose(got.to(want.dtype), want, rtol=rtol, atol=atol):
                    raise ValueError(
                        f"constraint {name!r}: fast_terms disagrees with autograd on {what} "
                        f"(max error {float((got - want).abs().max()):.3g})"
                    )

    @property
    def names(self) -> list[str]:
        return [b.name for b in self.barriers]

    @property
    def gain_count(self) -> int:
        """How many class-K gains a learned policy must output: one per barrier and HOCBF order."""
        return sum(b.relative_degree or 0 for b in self.barriers)

    def values(self, x: Tensor) -> Tensor:
        """Barrier values ``h_k(x)``, shape ``(B, K)`` (>= 0 safe)."""
        return torch.stack([b.h(x) for b in self.barriers], dim=1)

    def rows(self, x: Tensor, gains: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """All HOCBF rows at ``x (B, n)``: ``(G (B, K, m), b (B, K), h (B, K))`` with ``G u <= b`` safe.

        ``gains (B, gain_count)``: learned gains in barrier order (each barrier's r
        orders consecutive); ``None`` uses each barrier's defaults.
        """
        if gains is not None and gains.shape != (x.shape[0], self.gain_count):
            raise ValueError(f"gains must have shape ({x.shape[0]}, {self.gain_count}), got {tuple(gains.shape)}")
        if not self.barriers:  # nothing to keep: no rows
            return (
                x.new_zeros(x.shape[0], 0, self.model.control_dim),
                x.new_zeros(x.shape[0], 0),
                x.new_zeros(x.shape[0], 0),
            )
        if self.fast_terms is not None and self.linear:
            return self._rows_from_terms(x, gains)
        Gs, bs, hs = [], [], []
        start = 0
        with torch.enable_grad():
            xg = x.detach().clone().requires_grad_(True)
            fx, gx = self.model.f(xg), self.model.g(xg)  # once for every barrier
            for bar in self.barriers:
                r = bar.relative_degree or 0
                g = None if gains is None else gains[:, start : start + r]
                G, b, h = hocbf_row_at(bar, xg, fx, gx, g)
                Gs.append(G)
                bs.append(b)
                hs.append(h)
                start += r
        return torch.stack(Gs, 1), torch.stack(bs, 1), torch.stack(hs, 1)

    def safe_set_levels(self, x: Any) -> Any:
        """The safe set's levels ``psi_{k,i} (B, K, R)`` at ``x (B, n)`` (torch or numpy; ``+inf`` above each
        barrier's degree) with the default gains: ``x`` is in the safe set where all are >= 0. Linear class-K
        barriers only; otherwise just ``h`` (``(B, K, 1)``)."""
        if isinstance(x, np.ndarray):
            if not self.linear:
                return self.values_numpy(x)[..., None]
            return self.levels_from_terms(self.terms_numpy(x)[1])
        if not self.linear:
            with torch.no_grad():
                return self.values(x)[..., None]
        return self.levels_from_terms(self.terms(x).L.detach())

    def levels_from_terms(self, L: Any) -> Any:
        """:meth:`safe_set_levels` from the terms' ``L (B, K, R+1)`` (torch or numpy)."""
        if isinstance(L, np.ndarray):
            levels = np.einsum("...kj,kij->...ki", L[..., : self._level_coeff.shape[-1]], self._level_coeff)
            return np.where(self._level_valid, levels, np.inf)
        coeff = torch.as_tensor(self._level_coeff, dtype=L.dtype)
        levels = torch.einsum("...kj,kij->...ki", L[..., : coeff.shape[-1]], coeff)
        return torch.where(torch.as_tensor(self._level_valid), levels, torch.full_like(levels, torch.inf))

    def in_safe_set(self, x: Any) -> Any:
        """``(B,)`` bool: is ``x (B, n)`` (torch or numpy) in the safe set (every level >= 0, up to rounding)?"""
        levels = self.safe_set_levels(x)
        if not len(self.barriers):
            return np.ones(x.shape[0], bool) if isinstance(levels, np.ndarray) else torch.ones(x.shape[0], dtype=bool)
        return (levels >= -SAFE_SET_TOL).all(-1).all(-1)

    def gain_index(self) -> tuple[np.ndarray, np.ndarray]:
        """Where each of the ``gain_count`` flat gains sits in a per-barrier table ``(K, R)``: ``(barrier
        (G,), order (G,))`` index arrays, so that ``table[barrier, order] = gains`` (barrier order, each
        barrier's orders consecutive, as :meth:`rows` reads them)."""
        pairs = [(k, i) for k, bar in enumerate(self.barriers) for i in range(bar.relative_degree or 0)]
        return np.array([k for k, _ in pairs], dtype=np.int64), np.array([i for _, i in pairs], dtype=np.int64)

    def default_gains(self, orders: int) -> np.ndarray:
        """Each barrier's default class-K gains ``(K, orders)`` (1.0 where it declares none, and above its degree)."""
        out = np.ones((len(self.barriers), orders))
        for i, bar in enumerate(self.barriers):
            if bar.gains is not None:
                out[i, : len(bar.gains)] = bar.gains
        return out

    def _rows_from_terms(self, x: Tensor, gains: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        """:meth:`rows` from the closed-form :meth:`terms` (linear class-K only): the same rows, no autograd."""
        t = self.terms(x)
        top = max(t.L.shape[-1] - 1, 1)
        per = torch.as_tensor(self.default_gains(top), dtype=x.dtype).expand(x.shape[0], -1, -1).clone()
        if gains is not None:
            barrier, order = self.gain_index()
            per[:, torch.from_numpy(barrier), torch.from_numpy(order)] = gains
        return -t.A, rhs(t.L, t.degree, per), t.L[..., 0]

    def terms_numpy(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`terms` for a numpy state ``(B, n)`` -> ``(A (B, K, m), L (B, K, R+1))``: the closed form
        directly in numpy when ``fast_terms`` accepts arrays (the control-loop path), else via torch."""
        if self.fast_terms is not None:
            try:
                A, L = self.fast_terms(x)  # type: ignore[arg-type]
                if isinstance(A, np.ndarray) and isinstance(L, np.ndarray):
                    return A, L
            except (TypeError, AttributeError):
                pass
        t = self.terms(torch.as_tensor(x, dtype=torch.float64))
        return t.A.numpy(), t.L.numpy()

    @property
    def degrees(self) -> Tensor:
        """Relative degree of every barrier, ``(K,)`` long."""
        return self._degree

    def predict_numpy(self, x: np.ndarray, U: np.ndarray, dt: float) -> np.ndarray:
        """The barriers at the next sample, ``h (J, K)``, from one state ``x (n,)`` with each input of ``U (J, m)``
        held for ``dt`` (the model's :meth:`~ControlAffine.step_numpy`; one batched prediction)."""
        return self.values_numpy(self.model.step_numpy(np.repeat(x[None], U.shape[0], 0), U, dt))

    def values_numpy(self, x: np.ndarray) -> np.ndarray:
        """Barrier values ``(B, K)`` at a numpy state ``(B, n)`` (from ``fast_values``, else from the fast terms
        when they take numpy, else through torch)."""
        if self.fast_values is not None:
            return self.fast_values(x)
        if self.fast_terms is not None:
            return self.terms_numpy(x)[1][..., 0]
        with torch.no_grad():
            return self.values(torch.as_tensor(x, dtype=torch.float64)).numpy()

    def terms(self, x: Tensor) -> HocbfTerms:
        """The gain-free pieces of every HOCBF row at ``x (B, n)``, for barriers with linear class-K functions.

        With linear class-K functions and gains held within a step, the HOCBF chain
        is ``psi_r = prod_i (d/dt + k_i) h``, so the row is ``G u <= b`` with
        ``G = -L_g L_f^{r-1} h`` and ``b = sum_j c_j(k) L_f^j h``, ``c`` the
        coefficients of ``prod_i (s + k_i)``. Storing these pieces lets a batch
        mix scenes and lets gains change without re-differentiating the model.
        """
        if self.fast_terms is not None:
            A, L = self.fast_terms(x)
            return HocbfTerms(A, L, self._degree)
        for bar in self.barriers:
            if bar.class_k != "linear":
                raise ValueError(f"constraint {bar.name!r}: terms() needs the linear class-K, got {bar.class_k!r}")
        batch, k_count, m = x.shape[0], len(self.barriers), self.model.control_dim
        if k_count == 0:
            return HocbfTerms(x.new_zeros(batch, 0, m), x.new_zeros(batch, 0, 2), torch.zeros(0, dtype=torch.long))
        degree, top = self._degree, int(self._degree.max())
        # One block of states per barrier, so each Lie-derivative order is a single backward pass
        # for all barriers (the blocks are independent) instead of one per barrier.
        with torch.enable_grad():
            xs = x.detach().repeat(k_count, 1).requires_grad_(True)  # (K*B, n), block k = barrier k
            fx, gx = self.model.f(xs), self.model.g(xs)
            psi = torch.cat([bar.h(xs[i * batch : (i + 1) * batch]) for i, bar in enumerate(self.barriers)])
            levels, lg_at = [psi.detach()], []
            for _ in range(top):
                psi, lg = lie_derivatives(psi, xs, fx, gx)
                levels.append(psi.detach())
                lg_at.append(lg.detach())
        L = torch.stack(levels, -1).reshape(k_count, batch, top + 1).transpose(0, 1)  # (B, K, R+1)
        lg_all = torch.stack(lg_at, 0).reshape(top, k_count, batch, m)  # order j+1 input gains
        A = lg_all[degree - 1, torch.arange(k_count)].transpose(0, 1)  # (B, K, m): L_g L_f^{r-1} h
        keep = torch.arange(top + 1) <= degree.unsqueeze(-1)  # (K, R+1): orders up to each degree
        L = L * keep
        return HocbfTerms(A.to(x.dtype), L.to(x.dtype), degree)


@dataclass
class HocbfTerms:
    """Gain-free HOCBF pieces (see :meth:`ConstraintSet.terms`).

    ``A (B, K, m)``: ``L_g L_f^{r-1} h``; ``L (B, K, R+1)``: ``L_f^j h`` for
    ``j <= r`` (zero above a barrier's own degree), ``R`` the largest degree;
    ``degree (K,)``.
    """

    A: Tensor
    L: Tensor
    degree: Tensor


def hocbf_coefficients(degree: Any, gains: Any, top: int) -> Any:
    """The coefficients ``c (..., K, top+1)`` of ``prod_{i < r_k} (s + k_i)`` (``c[..., j]`` multiplies
    ``s^j``, zero above ``r_k``) for ``degree (K,)`` or ``(..., K)`` and ``gains (..., K, R)``, ``R >= top``;
    torch (differentiable in ``gains``) or numpy alike. The row's right-hand side is ``sum_j c_j L_f^j h``."""
    xp = np if isinstance(gains, np.ndarray) else torch
    one = gains[..., 0] * 0 + 1
    coeff = [one] + [one * 0 for _ in range(top)]  # coeff[j] (..., K): the coefficient of s^j
    for i in range(top):
        use, k = degree > i, gains[..., i]
        grown = [k * coeff[0]] + [coeff[j - 1] + k * coeff[j] for j in range(1, top + 1)]  # (s + k) * poly
        coeff = [xp.where(use, new, old) for new, old in zip(grown, coeff, strict=True)]
    return xp.stack(coeff, -1)


def rhs(L: Any, degree: Any, gains: Any) -> Any:
    """``b (..., K) = sum_j c_j L_f^j h`` with ``c`` :func:`hocbf_coefficients` (the polynomial is monic of
    degree ``r_k``). ``L (..., K, R+1)``, ``degree (K,)`` or ``(..., K)``, ``gains (..., K, R)``: torch
    tensors (differentiable in ``gains``) or numpy arrays alike (the batch-1 control loop)."""
    return (hocbf_coefficients(degree, gains, L.shape[-1] - 1) * L).sum(-1)
