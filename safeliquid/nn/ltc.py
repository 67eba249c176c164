"""Liquid time-constant cell (Hasani et al., AAAI 2021) in the conductance form of ncps.

Neuron j has potential v_j, leak (g_leak, v_leak) and capacitance c_m. Synapse
i -> j has conductance ``g_ij(v_i) = w_ij * sigmoid(sigma_ij * (v_i - mu_ij))``
and reversal potential E_ij; sensory synapses from the inputs enter alike:

    c_m dv_j/dt = g_leak (v_leak - v_j) + sum_i g_ij (E_ij - v_j).

The time constant ``c_m / (g_leak + sum_i g_ij)`` depends on the input: that is
the "liquid" part. Writing ``num = g_leak v_leak + sum g E`` and
``den = g_leak + sum g``, the fused semi-implicit step of length h is

    v <- (c_m/h * v + num) / (c_m/h + den + eps),

a positive weighted average of v, v_leak, the E's (and 0, through eps), so the
state stays in their range whatever the input. w, c_m, g_leak and the sensory w
are reparametrised by softplus, so no optimiser step can make them negative.

Implementation: only the active synapses are computed. With ``E`` active
synapses, the pre-synaptic gather and sigma-scaling is one ``(N, E)`` matmul and
the scatter of ``[g E, g]`` onto the post-synaptic neurons is one ``(E, 2N)``
matmul, so an unfold costs five tensor ops however sparse the wiring. Dense
wirings of many neurons use the ``(B, N, N)`` form instead (it is cheaper
when E approaches N^2 and N is large).
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from safeliquid.nn._fused import fused_sequence
from safeliquid.nn._ltc_inference import BatchOneKernel
from safeliquid.nn.base import Cell, as_column
from safeliquid.nn.wiring import FullyConnected, Wiring

SOLVERS = ("fused", "euler", "rk4")
MAPPINGS = ("affine", "linear", None)

# Initial ranges of the *effective* (post-softplus) parameters, from the LTC paper / ncps.
_INIT = {
    "gleak": (0.001, 1.0),
    "vleak": (-0.2, 0.2),
    "cm": (0.4, 0.6),
    "w": (0.001, 1.0),
    "sigma": (3.0, 8.0),
    "mu": (0.3, 0.8),
    "sensory_w": (0.001, 1.0),
    "sensory_sigma": (3.0, 8.0),
    "sensory_mu": (0.3, 0.8),
}
POSITIVE = ("gleak", "cm", "w", "sensory_w")
_version = operator.attrgetter("_version")
# Above this many synapses per neuron the dense (B, N, N) form is cheaper than the synapse list.
_DENSE_FANIN = 16


def inverse_softplus(y: Tensor) -> Tensor:
    """The raw value whose softplus is ``y > 0``."""
    return y + torch.log(-torch.expm1(-y))


@dataclass
class _Synapses:
    """One synapse group (recurrent or sensory) ready for the step: see :meth:`LTCCell.prepare`."""

    dense: bool
    scale: Tensor  # sparse: (P, E) pre -> synapse, sigma on the entries; dense: sigma (P, N)
    shift: Tensor  # sparse: (E,) = -sigma*mu;                              dense: mu (P, N)
    scatter: Tensor  # sparse: (E, 2N) synapse -> [w E | w] on the post neuron; dense: (2, P, N)

    def __call__(self, v: Tensor, acc: Tensor) -> Tensor:
        """``acc + [sum g E | sum g]`` for pre-synaptic potentials ``v (B, P)``; ``acc (B or 1, 2N)`` -> ``(B, 2N)``."""
        if not self.dense:
            return torch.addmm(acc, torch.sigmoid(torch.addmm(self.shift, v, self.scale)), self.scatter)
        s = torch.sigmoid(self.scale * (v.unsqueeze(-1) - self.shift))  # (B, P, N)
        return acc + (s.unsqueeze(1) * self.scatter).sum(2).flatten(1)


@dataclass
class _Prepared:
    recurrent: _Synapses
    sensory: _Synapses
    leak: Tensor  # (2N,) = [g_leak v_leak | g_leak]
    cm: Tensor  # (N,)


class LTCCell(Cell):
    """A liquid time-constant cell on a wiring.

    Args:
        input_size: number of input features.
        wiring: a :class:`~safeliquid.nn.wiring.Wiring` (built for ``input_size``
            here) or an int for a fully connected cell of that many neurons.
        solver: ``"fused"`` (semi-implicit, as in the paper), ``"euler"`` or ``"rk4"``.
        ode_unfolds: solver sub-steps per control step ``dt``.
        input_mapping, output_mapping: ``"affine"``, ``"linear"`` or ``None``.
        epsilon: added to the fused solver's denominator.

    Shapes: ``x (B, input_size)``, ``h (B, units)``, ``y (B, wiring.output_dim)``.
    Outputs are the potentials of the motor neurons ``0 .. output_dim-1``.
    """

    continuous_time = True

    def __init__(
        self,
        input_size: int,
        wiring: Wiring | int,
        solver: str = "fused",
        ode_unfolds: int = 6,
        input_mapping: str | None = "affine",
        output_mapping: str | None = "affine",
        epsilon: float = 1e-8,
    ) -> None:
        super().__init__()
        for name, m in (("input_mapping", input_mapping), ("output_mapping", output_mapping)):
            if m not in MAPPINGS:
                raise ValueError(f"{name} must be one of {MAPPINGS}, got {m!r}")
        if isinstance(wiring, int):
            wiring = FullyConnected(wiring)
        wiring.build(input_size)
        self.wiring = wiring
        self.input_size = input_size
        self.state_size = wiring.units
        self.output_size = wiring.output_dim
        self._cache: tuple[int, _Prepared] | None = None
        self._kernel: tuple[int, BatchOneKernel] | None = None
        self._dense = self._sensory_dense = False
        self.solver = solver
        self.ode_unfolds = ode_unfolds
        self.epsilon = epsilon
        self.input_mapping = input_mapping
        self.output_mapping = output_mapping
        self._params: list[nn.Parameter] = []

        n, k = wiring.units, input_size
        adj = torch.as_tensor(wiring.adjacency, dtype=torch.get_default_dtype())
        sadj = torch.as_tensor(wiring.sensory_adjacency, dtype=torch.get_default_dtype())

        def init(name: str, shape: tuple[int, ...]) -> nn.Parameter:
            lo, hi = _INIT[name]
            value = torch.rand(shape) * (hi - lo) + lo
            return nn.Parameter(inverse_softplus(value) if name in POSITIVE else value)

        self.gleak = init("gleak", (n,))
        self.vleak = init("vleak", (n,))
        self.cm = init("cm", (n,))
        self.sigma = init("sigma", (n, n))
        self.mu = init("mu", (n, n))
        self.w = init("w", (n, n))
        self.erev = nn.Parameter(adj.clone())
        self.sensory_sigma = init("sensory_sigma", (k, n))
        self.sensory_mu = init("sensory_mu", (k, n))
        self.sensory_w = init("sensory_w", (k, n))
        self.sensory_erev = nn.Parameter(sadj.clone())
        self.register_buffer("sparsity_mask", adj.abs())
        self.register_buffer("sensory_sparsity_mask", sadj.abs())
        self.input_w = nn.Parameter(torch.ones(k)) if input_mapping else None
        self.input_b = nn.Parameter(torch.zeros(k)) if input_mapping == "affine" else None
        self.output_w = nn.Parameter(torch.ones(self.output_size)) if output_mapping else None
        self.output_b = nn.Parameter(torch.zeros(self.output_size)) if output_mapping == "affine" else None
        # Index lists (pre, post) of the active synapses; the wiring is fixed, so computed once.
        self._edges = (adj.nonzero(as_tuple=True), sadj.nonzero(as_tuple=True))
        self._params = list(self.parameters())
        self._dense = wiring.synapse_count > _DENSE_FANIN * n
        self._sensory_dense = wiring.sensory_synapse_count > _DENSE_FANIN * n
        self._settings_changed()
        self._x1_shape, self._h1_shape = (1, input_size), (1, wiring.units)
        self._kernel_dtype = self.sigma.dtype

    # -- solver settings: changing one invalidates the batch-1 kernel ----------------------
    @property
    def solver(self) -> str:
        return self._solver

    @solver.setter
    def solver(self, value: str) -> None:
        if value not in SOLVERS:
            raise ValueError(f"solver must be one of {SOLVERS}, got {value!r}")
        self._solver = value
        self._settings_changed()

    @property
    def ode_unfolds(self) -> int:
        return self._ode_unfolds

    @ode_unfolds.setter
    def ode_unfolds(self, value: int) -> None:
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"ode_unfolds must be a positive integer, got {value!r}")
        self._ode_unfolds = value
        self._settings_changed()

    @property
    def epsilon(self) -> float:
        return self._epsilon

    @epsilon.setter
    def epsilon(self, value: float) -> None:
        if not value >= 0:
            raise ValueError(f"epsilon must be non-negative, got {value!r}")
        self._epsilon = float(value)
        self._settings_changed()

    def _settings_changed(self) -> None:
        self._kernel = None
        self._batch_one_ok = getattr(self, "_solver", None) == "fused" and not self._dense and not self._sensory_dense

    # -- parameter-only precomputation ------------------------------------------------
    def _group(self, sigma: Tensor, mu: Tensor, w_raw: Tensor, erev: Tensor, mask: Tensor, dense: bool) -> _Synapses:
        w = F.softplus(w_raw)
        if dense:
            w = w * mask
            return _Synapses(True, sigma, mu, torch.stack([w * erev, w]))
        pre, post = self._edges[0] if mask is self.sparsity_mask else self._edges[1]
        n_pre, n = mask.shape
        e = pre.shape[0]
        arange = torch.arange(e, device=mask.device)
        sig_e = sigma[pre, post]
        w_e = w[pre, post]
        scale = torch.zeros(n_pre, e, dtype=sigma.dtype, device=sigma.device).index_put((pre, arange), sig_e)
        scatter = torch.zeros(e, 2 * n, dtype=sigma.dtype, device=sigma.device)
        scatter = scatter.index_put((arange, post), w_e * erev[pre, post]).index_put((arange, post + n), w_e)
        return _Synapses(False, scale, -sig_e * mu[pre, post], scatter)

    def _cache_key(self) -> int:
        # Optimiser steps and load_state_dict bump _version, which only ever grows, so the sum
        # changes exactly when some parameter changed; .to()/.double() clear the cache in _apply.
        return sum(map(_version, self._params))

    def prepare(self) -> _Prepared:
        """Reparametrised weights and synapse tables; cached while gradients are off and parameters unchanged."""
        cacheable = not torch.is_grad_enabled() and not torch.jit.is_tracing()
        if cacheable and self._cache is not None and self._cache[0] == self._cache_key():
            return self._cache[1]
        gleak = F.softplus(self.gleak)
        prep = _Prepared(
            recurrent=self._group(self.sigma, self.mu, self.w, self.erev, self.sparsity_mask, self._dense),
            sensory=self._group(
                self.sensory_sigma,
                self.sensory_mu,
                self.sensory_w,
                self.sensory_erev,
                self.sensory_sparsity_mask,
                self._sensory_dense,
            ),
            leak=torch.cat([gleak * self.vleak, gleak]),
            cm=F.softplus(self.cm),
        )
        self._cache = (self._cache_key(), prep) if cacheable else None
        return prep

    # -- the step ------------------------------------------------------------------------
    def forward(self, x: Tensor, h: Tensor | None = None, dt: float | Tensor = 1.0) -> tuple[Tensor, Tensor]:
        """One checked step. At batch 1 with gradients off (a control loop) it runs the numpy kernel
        of :mod:`safeliquid.nn._ltc_inference`; otherwise the torch path. Both give the same numbers."""
        if (
            self._batch_one_ok
            and type(dt) is float
            and h is not None
            and not torch.is_grad_enabled()
            and x.shape == self._x1_shape
            and h.shape == self._h1_shape
            and x.dtype == h.dtype == self._kernel_dtype
            and x.is_cpu
            and h.is_cpu
            and not torch.jit.is_tracing()
            and not torch.compiler.is_compiling()
        ):
            xn = (x.detach() if x.requires_grad else x).numpy()[0]
            hn = (h.detach() if h.requires_grad else h).numpy()[0]
            # x.x + h.h is finite iff every entry is (or it overflows: the torch path then decides).
            if math.isfinite(xn.dot(xn) + hn.dot(hn)) and math.isfinite(dt) and dt > 0:
                y, h_next = self._batch_one_kernel().step(xn, hn, dt)
                return torch.from_numpy(y), torch.from_numpy(h_next)
        # Anything unusual (including bad input, which raises there) takes the checked torch path.
        return super().forward(x, h, dt)

    def _batch_one_kernel(self) -> BatchOneKernel:
        key = self._cache_key()
        if self._kernel is None or self._kernel[0] != key:
            prep = self.prepare()
            r, sn = prep.recurrent, prep.sensory
            kernel = BatchOneKernel(
                r.scale, r.shift, r.scatter, sn.scale, sn.shift, sn.scatter, prep.leak, prep.cm,
                self.input_w, self.input_b, self.output_w, self.output_b,
                self.output_size, self.ode_unfolds, self.epsilon,
            )  # fmt: skip
            self._kernel = (key, kernel)
        return self._kernel[1]

    def map_inputs(self, x: Tensor) -> Tensor:
        if self.input_w is not None:
            x = x * self.input_w if self.input_b is None else torch.addcmul(self.input_b, x, self.input_w)
        return x

    def map_outputs(self, v: Tensor) -> Tensor:
        y = v[:, : self.output_size]
        if self.output_w is not None:
            y = y * self.output_w if self.output_b is None else torch.addcmul(self.output_b, y, self.output_w)
        return y

    def sensory_drive(self, prep: _Prepared, x: Tensor) -> Tensor:
        """``[g_leak v_leak + sum_sensory g E | g_leak + sum_sensory g]``, shape ``(B, 2N)``, for raw inputs ``x``."""
        return prep.sensory(self.map_inputs(x), prep.leak.unsqueeze(0))

    def vector_field(self, prep: _Prepared, drive: Tensor, v: Tensor) -> Tensor:
        """``dv/dt`` for potentials ``v (B, N)`` under a fixed sensory ``drive (B, 2N)``."""
        nd = prep.recurrent(v, drive)
        num, den = nd.chunk(2, dim=1)
        return (num - den * v) / prep.cm

    def step(self, prep: _Prepared, x: Tensor, h: Tensor, dt: float | Tensor) -> tuple[Tensor, Tensor]:
        drive = self.sensory_drive(prep, x)
        sub = as_column(dt) / self.ode_unfolds  # float or (B, 1)
        v = h
        if self.solver == "fused":
            cm_t = (prep.cm / sub).reshape(-1, self.state_size)  # (1, N) or (B, N)
            # Put c_m/h + eps into the denominator half once; each unfold then adds the synapses.
            num0, den0 = drive.chunk(2, dim=1)
            acc = torch.cat([num0, den0 + cm_t + self.epsilon], dim=1)
            rec = prep.recurrent
            if self._plain_ops(rec):
                for _ in range(self.ode_unfolds):  # plain autograd ops: export and dense wirings
                    num, den = rec(v, acc).chunk(2, dim=1)
                    v = torch.addcmul(num, cm_t, v) / den
            else:
                v = fused_sequence(v, acc[None], cm_t[None], rec.scale, rec.shift, rec.scatter, self.ode_unfolds)[0]
        elif self.solver == "euler":
            for _ in range(self.ode_unfolds):
                v = v + sub * self.vector_field(prep, drive, v)
        else:
            for _ in range(self.ode_unfolds):
                k1 = self.vector_field(prep, drive, v)
                k2 = self.vector_field(prep, drive, v + 0.5 * sub * k1)
                k3 = self.vector_field(prep, drive, v + 0.5 * sub * k2)
                k4 = self.vector_field(prep, drive, v + sub * k3)
                v = v + sub / 6.0 * (k1 + 2.0 * k2 + 2.0 * k3 + k4)
        return self.map_outputs(v), v

    def _plain_ops(self, rec: _Synapses) -> bool:
        """Whether to use plain autograd ops instead of the fused kernel (export, tracing, dense wirings)."""
        return rec.dense or torch.jit.is_tracing() or torch.compiler.is_compiling()

    def sequence(self, prep: _Prepared, x: Tensor, h: Tensor, timespans: float | Tensor) -> tuple[Tensor, Tensor]:
        """Whole sequence with the fused kernel: the sensory drive of all T steps is one batched call.

        ``x (B, T, in)``, ``h (B, N)``, ``timespans`` float or ``(B, T)`` -> ``(y (B, T, out), h_T (B, N))``.
        """
        if self.solver != "fused" or self._plain_ops(prep.recurrent):
            return super().sequence(prep, x, h, timespans)
        batch, steps, _ = x.shape
        n = self.state_size
        drive = self.sensory_drive(prep, x.transpose(0, 1).reshape(steps * batch, -1)).view(steps, batch, 2 * n)
        if isinstance(timespans, Tensor):
            cm_t = prep.cm * (self.ode_unfolds / timespans.t().unsqueeze(-1))  # (T, B, N)
        else:
            cm_t = (prep.cm * (self.ode_unfolds / timespans)).view(1, 1, n)
        num0, den0 = drive[..., :n], drive[..., n:]
        acc = torch.cat([num0, den0 + cm_t + self.epsilon], dim=-1)
        rec = prep.recurrent
        states = fused_sequence(h, acc, cm_t, rec.scale, rec.shift, rec.scatter, self.ode_unfolds)
        y = self.map_outputs(states.reshape(steps * batch, n)).view(steps, batch, -1).transpose(0, 1)
        return y, states[-1]

    def state_bounds(self) -> tuple[float, float]:
        """The interval the fused solver keeps the state in: spanned by v_leak, the reversals and 0."""
        with torch.no_grad():
            vals = [
                self.vleak.flatten(),
                self.erev[self.sparsity_mask > 0],
                self.sensory_erev[self.sensory_sparsity_mask > 0],
            ]
            allv = torch.cat([v.flatten() for v in vals] + [torch.zeros(1, dtype=self.vleak.dtype)])
        return float(allv.min()), float(allv.max())

    def _apply(self, fn, recurse=True):
        self._cache = self._kernel = None  # dtype/device moves invalidate the prepared tables
        out = super()._apply(fn, recurse)
        self._params = list(self.parameters())
        self._kernel_dtype = self.sigma.dtype
        self._edges = tuple(tuple(i.to(self.sigma.device) for i in e) for e in self._edges)
        return out

    @property
    def synapse_count(self) -> int:
        return self.wiring.synapse_count
