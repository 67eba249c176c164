"""LiquidBarrierPolicy: observation -> encoder -> cell (19-neuron LTC/NCP by default) -> (u_ref, gains) -> CBF-QP.

The QP is the BarrierNet layer written on the gain-free HOCBF pieces
(:meth:`safeliquid.safety.ConstraintSet.terms`), so one batch can mix episodes
with different scenes (rows padded per batch) and the gains a network emits
enter the rows without re-differentiating the model:

    min_u 1/2 |u - u_ref|^2   s.t.   -A_k u <= sum_j c_j(k_k) L_f^j h_k,   u_min <= u <= u_max.

Gains are shared per *gain group*, the barrier name's leading word (``obstacle3``
-> ``obstacle``, ``rail.low`` -> ``rail``), one per HOCBF order, and scale the
barrier's default gains by ``gain_range ** tanh(raw)``: positive, bounded away
from 0 and infinity. Safety modes: ``barrier`` (learned gains, trained through
the QP), ``filter`` (the network is trained without the layer; at run time
:class:`~safeliquid.safety.SafetyFilter` with the default gains and the
sampled-data correction filters its action), ``none``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from safeliquid.nn import Sequence, make_cell
from safeliquid.policies.config import SAFETY_MODES, PolicyConfig
from safeliquid.policies.encoder import Encoder
from safeliquid.policies.priors import dyn_needs, inverse_dynamics, model_terms
from safeliquid.policies.scene import PAD_RHS, defaults_and_groups, flat_gains
from safeliquid.qp import MAX_ITER
from safeliquid.safety import BarrierLayer, ConstraintSet
from safeliquid.safety.constraints import rhs
from safeliquid.safety.layer import solve_rows
from safeliquid.safety.models import joint_velocity


def _check_scene(constraints: ConstraintSet, state: np.ndarray | None, act_dim: int, batch: int) -> None:
    """Raise ``ValueError`` unless ``constraints`` act on this policy's actions and ``state`` is ``(n,)`` or
    ``(batch, n)`` finite values of their model's state."""
    model = constraints.model
    if model.control_dim != act_dim:
        raise ValueError(
            f"constraints are for a model with {model.control_dim} inputs but this policy has {act_dim} actions "
            "(a constraint set of another environment?)"
        )
    if state is None:
        return
    st = np.asarray(state, dtype=np.float64)
    if st.shape not in ((model.state_dim,), (batch, model.state_dim)):
        raise ValueError(
            f"state must have shape ({model.state_dim},) or ({batch}, {model.state_dim}) (the constraint set's model "
            f"state), got {st.shape}"
        )
    if not np.isfinite(st).all():
        raise ValueError("state contains NaN or inf; expected finite values")


class LiquidBarrierPolicy(nn.Module):
    """See the module docstring. Training: :meth:`forward` on sequences; run time: :meth:`reset` and :meth:`act`."""

    def __init__(self, config: PolicyConfig) -> None:
        super().__init__()
        self.config = c = config
        torch.manual_seed(c.seed)
        self.n_gain = len(c.gain_groups) * c.max_degree if c.safety == "barrier" else 0
        self.n_outputs = outputs = c.n_command + self.n_gain  # raw outputs: the command, then the gain logits
        self.encoder = Encoder(c.obs_dim, c.encoder_dim, c.scan)
        self.cell = make_cell(c.cell, c.encoder_dim, units=c.units, outputs=outputs)
        self.head = nn.Identity() if self.cell.output_size == outputs else nn.Linear(self.cell.output_size, outputs)
        self.skip = nn.Linear(c.encoder_dim, outputs, bias=False) if c.skip else None
        if self.skip is not None:
            nn.init.zeros_(self.skip.weight)  # starts as the plain cell
        self.sequence = Sequence(self.cell)
        mean = c.obs_mean or [0.0] * c.obs_dim
        std = c.obs_std or [1.0] * c.obs_dim
        self.register_buffer("obs_mean", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("obs_std", torch.tensor(std, dtype=torch.float32))
        self.register_buffer("bound", torch.tensor(c.action_bound, dtype=torch.float32))
        prior_bound = torch.tensor(c.prior_bound or [1.0] * c.act_dim, dtype=torch.float64)
        self.register_buffer("prior_bound", prior_bound, persistent=False)
        # The acceleration error a unit command error causes: the loss's scale with a prior.
        scale = prior_bound * (c.prior_gain if c.prior in ("velocity", "task") else 1.0)
        self.register_buffer("accel_scale", scale, persistent=False)
        self._h: Tensor | None = None
        self.run_safety = c.safety  # the safety mode at run time; set "none" to switch the layer off
        self.last_report: dict[str, Any] = {}
        self._layer_for: ConstraintSet | None = None  # the scene whose run-time layer and gain data are cached
        self._layer: BarrierLayer | None = None
        self._scene: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    # -- the network ---------------------------------------------------------------------------
    def set_normalization(self, mean: np.ndarray, std: np.ndarray) -> None:
        """Observation normalisation from data (kept in the checkpoint); ``std`` is floored at 1e-3."""
        self.obs_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.obs_std.copy_(torch.as_tensor(np.maximum(std, 1e-3), dtype=torch.float32))
        self.config.obs_mean = self.obs_mean.tolist()
        self.config.obs_std = self.obs_std.tolist()

    def _readout(self, y: Tensor, z: Tensor) -> Tensor:
        """Cell outputs ``y`` and encoded observations ``z (..., encoder_dim)`` -> raw outputs ``(..., outputs)``."""
        out = self.head(y)
        return out if self.skip is None else out + self.skip(z)

    def outputs(
        self, y: Tensor, dyn: tuple[Tensor, ...] | None = None, goal: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """Raw outputs ``(..., outputs)`` -> ``u_ref (..., m)`` and gain multipliers ``(..., groups, R)``.
        ``dyn``: the model's ``f (..., n)`` and ``g (..., n, m)`` at the states (needed with a ``prior``),
        then its task Jacobian ``J (..., k, m)`` (needed with ``prior="task"``); ``goal``: :meth:`goal_command`."""
        c = self.config
        if c.prior is None:
            u_ref = self.bound * torch.tanh(y[..., : c.act_dim])
        else:
            need, what = dyn_needs(c.prior)
            if dyn is None or len(dyn) < need:
                raise ValueError(f"a policy with prior={c.prior!r} needs the model's {what} (dyn=)")
            accel = self._accel(y[..., : c.n_command].double(), dyn, goal)
            u_ref = inverse_dynamics(dyn[0], dyn[1], accel).to(y.dtype)
        if not self.n_gain:
            return u_ref, None
        raw = y[..., c.n_command :].reshape(*y.shape[:-1], len(c.gain_groups), -1)
        return u_ref, c.gain_range ** torch.tanh(raw)

    def raw_step(self, obs: Tensor, h: Tensor | None, dt: float | None = None) -> tuple[Tensor, Tensor]:
        """One recurrent step on a batch: ``obs (B, obs_dim)``, ``h (B, H)`` or None -> the raw outputs ``(B,
        outputs)`` (the command and the gain logits before :meth:`outputs` squashes them) and ``h_next``.
        ``dt``: the time (s) since the previous observation (None: the control period); see :meth:`act`."""
        z = self.encoder((obs - self.obs_mean) / self.obs_std)
        y, h = self.cell(z, h, self._cell_time(dt))
        return self._readout(y, z), h

    def forward(
        self, obs: Tensor, h0: Tensor | None = None, dyn: tuple[Tensor, ...] | None = None
    ) -> tuple[Tensor, Tensor | None, Tensor]:
        """``obs (B, T, obs_dim)`` -> ``u_ref (B, T, m)``, gain multipliers ``(B, T, groups, R)`` or None, ``h_T``.
        ``dyn``: ``f (B, T, n)`` and ``g (B, T, n, m)`` of the model along the sequence (for a ``prior``),
        and ``J (B, T, k, m)`` (for ``prior="task"``)."""
        raw, h = self.raw_sequence(obs, h0)
        u_ref, mult = self.outputs(raw, dyn, self.goal_command(obs))
        return u_ref, mult, h

    def raw_sequence(self, obs: Tensor, h0: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """:meth:`raw_step` along sequences, through the cell's whole-sequence path: ``obs (B, T, obs_dim)``,
        ``h0 (B, H)`` or None -> raw outputs ``(B, T, outputs)`` and ``h_T``."""
        z = self.encoder((obs - self.obs_mean) / self.obs_std)
        y, h = self.sequence(z, h0, self.config.cell_time)
        return self._readout(y, z), h

    def goal_command(self, obs: Tensor) -> Tensor | None:
        """``obs (..., obs_dim)`` -> the goal-directed task velocity ``(..., task_dim)`` (float64) that the
        network's command is a residual on, or None without ``goal_gain`` (see :class:`PolicyConfig`)."""
        c = self.config
        if not c.goal_gain > 0:
            return None
        assert c.goal_obs is not None
        e = obs[..., c.goal_obs : c.goal_obs + c.task_dim].double()
        d = e.norm(dim=-1, keepdim=True)
        return e * torch.minimum(torch.full_like(d, c.goal_gain), c.goal_speed / d.clamp_min(1e-12))

    def task_velocity(self, raw: Tensor, goal: Tensor | None = None) -> Tensor:
        """The task prior's end-effector velocity ``(..., task_dim)`` from the raw command ``(..., task_dim)``
        and :meth:`goal_command`'s ``goal`` (None: none)."""
        v = self.config.task_bound * torch.tanh(raw)
        return v if goal is None else v + goal

    def _accel(self, raw: Tensor, dyn: tuple[Tensor, ...], goal: Tensor | None = None) -> Tensor:
        """Commanded accelerations ``(..., m)`` from the network's raw command ``(..., n_command)`` (float64),
        ``dyn`` (see :meth:`_outputs`; ``f``'s first ``m`` entries are the joint velocities) and ``goal``."""
        c, m = self.config, self.config.act_dim
        if c.prior == "accel":
            return self.prior_bound * torch.tanh(raw)
        if c.prior == "task":
            qd_star = joint_velocity(dyn[2], self.task_velocity(raw, goal))
            qd_star = torch.maximum(torch.minimum(qd_star, self.prior_bound), -self.prior_bound)
        else:
            qd_star = self.prior_bound * torch.tanh(raw)
        return c.prior_gain * (qd_star - dyn[0][..., :m])

    # -- the constraint layer -----------------------------------------------------------------
    def project(
        self,
        u_ref: Tensor,
        mult: Tensor | None,
        rows: dict[str, Tensor],
        with_status: bool = False,
        backend: str = "native",
    ) -> Any:
        """The CBF-QP on flattened samples of padded scenes (training): ``u_ref (N, m)``, ``mult (N, groups,
        R)``, ``rows`` from :func:`scene_rows` (``A (N, K, m)``, ``L (N, K, R+1)``, ``degree``/``group`` ``(N,
        K)``, ``default (N, K, R)``, ``mask (N, K)``) -> ``(u (N, m), slack (N, K))`` (and the QP status
        ``(N,)`` if ``with_status``). Differentiable in ``u_ref`` and ``mult``. ``backend``: see
        :func:`safeliquid.qp.solve_qp` (``qpth`` for comparisons). The QP is the layer's
        (:func:`safeliquid.safety.layer.solve_rows`); at run time :meth:`act` calls the whole layer."""
        A, L, mask = rows["A"], rows["L"], rows["mask"]
        if A.shape[1] == 0:
            u = torch.maximum(torch.minimum(u_ref, self.bound), -self.bound)
            out = (u, u_ref.new_zeros(u_ref.shape[0], 0))
            return (*out, torch.zeros(u_ref.shape[0], dtype=torch.long)) if with_status else out
        gains = rows["default"]
        if mult is not None:
            idx = rows["group"].clamp_min(0)
            per_barrier = torch.gather(mult, 1, idx.unsqueeze(-1).expand(-1, -1, mult.shape[-1]))
            learned = (rows["group"] >= 0).unsqueeze(-1)
            gains = torch.where(learned, gains * per_barrier, gains)
        b = torch.where(mask, rhs(L, rows["degree"], gains), torch.full_like(L[..., 0], PAD_RHS))
        G = -A * mask.unsqueeze(-1)
        bound = self.bound.double()
        sol = solve_rows(u_ref.double(), G.double(), b.double(), -bound, bound, backend=backend)
        out = (sol.u.to(u_ref.dtype), sol.slack)
        return (*out, sol.status) if with_status else out

    # -- run time ------------------------------------------------------------------------------
    def _cell_time(self, dt: float | None) -> float:
        """The cell's time for a step that lasted ``dt`` s (None: the control period): ``cell_time`` scaled."""
        c = self.config
        if dt is None:
            return c.cell_time
        if not (math.isfinite(dt) and dt > 0):
            raise ValueError(f"dt must be a positive finite number (s since the previous observation), got {dt}")
        return c.cell_time * float(dt) / c.dt

    def reset(self) -> None:
        """Start a new episode: forget the recurrent state."""
        self._h = None

    @torch.no_grad()
    def act(
        self,
        obs: np.ndarray | Tensor,
        state: np.ndarray | None = None,
        constraints: ConstraintSet | None = None,
        dt: float | None = None,
    ) -> np.ndarray:
        """One control step: ``obs (obs_dim,)`` or ``(B, obs_dim)`` -> action ``(m,)`` or ``(B, m)`` (float32).

        ``state`` (the constraint set's state, ``(n,)`` or ``(B, n)``) and ``constraints`` are
        needed unless ``safety == "none"``; a batch shares one constraint set. ``dt``: the time (s) since the
        previous observation, for irregular sampling (None: the control period ``config.dt``): a
        continuous-time cell integrates over it (its ``cell_time`` scaled by ``dt / config.dt``); a discrete
        cell (lstm, gru, mlp) steps once whatever it is. The safety layer keeps its nominal period.
        """
        obs_np = np.asarray(obs, dtype=np.float32) if not isinstance(obs, Tensor) else obs.detach().float().numpy()
        single = obs_np.ndim == 1
        if obs_np.ndim not in (1, 2) or obs_np.shape[-1] != self.config.obs_dim:
            raise ValueError(f"observation must have {self.config.obs_dim} entries, got shape {obs_np.shape}")
        if not np.isfinite(obs_np).all():
            raise ValueError("observation contains NaN or inf")
        o = torch.from_numpy(obs_np.reshape(1, -1) if single else obs_np)
        if self._h is not None and self._h.shape[0] != o.shape[0]:
            raise ValueError(f"batch changed from {self._h.shape[0]} to {o.shape[0]} without reset()")
        mode = self.run_safety
        if mode not in SAFETY_MODES or (mode == "barrier" and not self.n_gain):
            raise ValueError(
                f"run_safety must be one of {SAFETY_MODES} ('barrier' only if trained with it), got {mode!r}"
            )
        if constraints is not None:
            _check_scene(constraints, state, self.config.act_dim, o.shape[0])
        time = self._cell_time(dt)
        if single and mode != "none" and state is not None and constraints is not None:
            return self._act_one(obs_np.astype(np.float64), np.asarray(state, np.float64), constraints, time)
        needs_model = mode != "none" or self.config.prior is not None
        if needs_model and (state is None or constraints is None):
            prior = f" and prior={self.config.prior!r}" if self.config.prior else ""
            raise ValueError(f"a policy with safety={mode!r}{prior} needs state= and constraints=")
        x = None if state is None else torch.as_tensor(np.asarray(state), dtype=torch.float64).reshape(o.shape[0], -1)
        dyn = None
        if self.config.prior is not None:
            assert x is not None and constraints is not None
            dyn = model_terms(constraints.model, x, self.config.prior)
        raw, self._h = self.raw_step(o, self._h, dt)  # the cell's own step (batch-1 fast path)
        u_ref, mult = self.outputs(raw, dyn, self.goal_command(o))
        slack = torch.zeros(o.shape[0], 0)
        failed = fallback = torch.zeros(o.shape[0], dtype=torch.bool)
        if mode == "none":
            u = torch.maximum(torch.minimum(u_ref, self.bound), -self.bound)
        else:
            assert x is not None and constraints is not None
            gains = None
            if mode == "barrier" and mult is not None:
                gains = torch.from_numpy(self._scene_gains(constraints, mult.double().numpy()))
            u, record = self._layer_of(constraints)(x, u_ref.double(), gains)
            slack, failed, fallback = record.slack, record.status == MAX_ITER, record.fallback
        u_ref_np, out = u_ref.numpy(), u.float().numpy()
        self.last_report = {
            "u_ref": u_ref_np[0] if single else u_ref_np,
            "intervention": np.linalg.norm(out - u_ref_np, axis=-1),
            "slack": slack.amax(-1).numpy() if slack.shape[-1] else np.zeros(o.shape[0]),
            "failed": failed.numpy(),
            "fallback": fallback.numpy(),
        }
        return out[0] if single else out

    def _layer_of(self, constraints: ConstraintSet) -> BarrierLayer:
        """The run-time layer for this scene (with the sampled-data correction at the policy's period), and
        the scene's per-barrier gain data, built once per constraint set."""
        if self._layer is None or self._layer_for is not constraints:
            self._layer = BarrierLayer(constraints, dt=self.config.dt)
            self._scene = defaults_and_groups(constraints, self.config.gain_groups, self.config.max_degree)
            self._layer_for = constraints
        return self._layer

    def _scene_gains(self, constraints: ConstraintSet, mult: np.ndarray) -> np.ndarray:
        """Gain multipliers ``(..., groups, R)`` -> the layer's flat gains ``(..., gain_count)`` (:func:`flat_gains`
        on this scene's data, built once per constraint set)."""
        self._layer_of(constraints)
        assert self._scene is not None
        return flat_gains(constraints, self._scene, mult)

    # -- the batch-1 control loop ---------------------------------------------------------------
    def _numpy_weights(self) -> dict[str, np.ndarray]:
        """float64 numpy copies of the encoder and head weights, refreshed when any parameter changes."""
        params = getattr(self, "_np_params", None)
        if params is None:
            params = self._np_params = [p for _, p in self.named_parameters()] + [self.obs_mean, self.obs_std]
        key = [(p._version, p.data_ptr()) for p in params]
        if getattr(self, "_np_key", None) != key:
            enc = self.encoder
            w = {k: v.detach().double().numpy().copy() for k, v in enc.state_dict().items()}
            w["mean"], w["std"] = self.obs_mean.double().numpy().copy(), self.obs_std.double().numpy().copy()
            w["bound"] = self.bound.double().numpy().copy()
            if isinstance(self.head, nn.Linear):
                w["head.weight"] = self.head.weight.detach().double().numpy().copy()
                w["head.bias"] = self.head.bias.detach().double().numpy().copy()
            if self.skip is not None:
                w["skip.weight"] = self.skip.weight.detach().double().numpy().copy()
            if enc.scan is not None:
                start, length = enc.scan
                # Circular convolution as a gather: window j of ray i is ray (i + j - 2) mod length.
                w["gather"] = (np.arange(length)[:, None] + np.arange(5)[None] - 2) % length + start
                rest = np.r_[0:start, start + length : self.config.obs_dim]
                w["rest"] = rest
            self._np_weights, self._np_key = w, key
        return self._np_weights

    def _encode_np(self, o: np.ndarray, w: dict[str, np.ndarray]) -> np.ndarray:
        o = (o - w["mean"]) / w["std"]
        if self.encoder.scan is not None:
            windows = o[w["gather"]]  # (rays, 5)
            conv = np.maximum(windows @ w["conv.weight"][:, 0].T + w["conv.bias"], 0.0)  # (rays, 4)
            o = np.concatenate([o[w["rest"]], conv.T.ravel()])  # channel-major, as Conv1d's flatten
        return np.tanh(w["linear.weight"] @ o + w["linear.bias"])

    def _act_one(self, o: np.ndarray, state: np.ndarray, constraints: ConstraintSet, time: float) -> np.ndarray:
        """Batch 1 with the layer (``barrier`` or ``filter``): encoder in numpy, the cell's own batch-1 kernel
        over the cell time ``time``, the layer's numpy path (:meth:`BarrierLayer.project`). Same numbers as the
        batched torch path (a test checks)."""
        w = self._numpy_weights()
        z_np = self._encode_np(o, w)
        z = torch.from_numpy(z_np).to(self.obs_mean.dtype).unsqueeze(0)
        h = self._h if self._h is not None else self.cell.initial_state(1, dtype=z.dtype)
        y, self._h = self.cell(z, h, time)
        yv = y[0].double().numpy()
        if "head.weight" in w:
            yv = w["head.weight"] @ yv + w["head.bias"]
        if "skip.weight" in w:
            yv = yv + w["skip.weight"] @ z_np
        m, n_cmd = self.config.act_dim, self.config.n_command
        if self.config.prior is None:
            u_ref = w["bound"] * np.tanh(yv[:m])
        else:
            dyn1 = model_terms(constraints.model, torch.from_numpy(state.reshape(1, -1)), self.config.prior)
            accel = self._accel(torch.from_numpy(yv[None, :n_cmd]), dyn1, self.goal_command(torch.from_numpy(o[None])))
            u_ref = inverse_dynamics(dyn1[0], dyn1[1], accel)[0].numpy()
        gains = None
        if self.run_safety == "barrier" and constraints.barriers:
            mult = self.config.gain_range ** np.tanh(yv[n_cmd:].reshape(len(self.config.gain_groups), -1))
            gains = self._scene_gains(constraints, mult)
        u, record = self._layer_of(constraints).project(state, u_ref, gains)
        self.last_report = {
            "u_ref": u_ref.astype(np.float32),
            "intervention": record.intervention,
            "slack": np.array([record.slack[0].max() if record.slack.size else 0.0]),
            "failed": record.status == MAX_ITER,
            "fallback": record.fallback,
        }
        return u.astype(np.float32)
