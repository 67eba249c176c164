"""The LTC fused semi-implicit solver over a whole sequence, as one autograd node.

For the synapse-list form (see :mod:`safeliquid.nn.ltc`), one unfold is

    s   = sigmoid(v S + c)                 s: (B, E)
    num = acc_num + s P_num                (B, N)
    den = acc_den + s P_den                (B, N)
    v'  = (cm_t * v + num) / den           v': (B, N)

with ``S (N, E)``, ``c (E,)``, ``P = [P_num | P_den] (E, 2N)``, per control step
``acc = [acc_num | acc_den] (B, 2N)`` (sensory drive and leak, with
``cm_t + eps`` already in ``acc_den``) and ``cm_t (B or 1, N)``. A sequence of T
control steps is T x ``unfolds`` such updates.

Autograd would record ~6 nodes per unfold, and at control-policy sizes the
per-node overhead outweighs the arithmetic. Here the whole sequence is one node:
the forward writes every intermediate into stacked buffers, and the backward
carries only the state adjoint through the loop,

    g_num = g / den,   g_den = -g_num * v'
    g_z   = (g_num P_num^T + g_den P_den^T) * s (1 - s)
    g_v   = g_z S^T + g_num * cm_t                       (into the previous unfold)

and then forms every parameter gradient at once from the stacked buffers:
``S^T g_z`` summed over unfolds is one GEMM, and likewise for P, c, acc and cm_t.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


def fused_sequence(
    h0: Tensor, acc: Tensor, cm_t: Tensor, scale: Tensor, shift: Tensor, scatter: Tensor, unfolds: int
) -> Tensor:
    """States after each control step, ``(T, B, N)``.

    ``h0 (B, N)``, ``acc (T, B, 2N)``, ``cm_t (T or 1, B or 1, N)``, ``scale (N, E)``,
    ``shift (E,)``, ``scatter (E, 2N)``. Differentiable in every tensor argument.
    """
    if torch.is_grad_enabled() and any(t.requires_grad for t in (h0, acc, cm_t, scale, shift, scatter)):
        return _FusedSequence.apply(h0, acc, cm_t, scale, shift, scatter, unfolds)
    return _forward(h0, acc, cm_t, scale, shift, scatter, unfolds)[0]


def _forward(
    h0: Tensor, acc: Tensor, cm_t: Tensor, scale: Tensor, shift: Tensor, scatter: Tensor, unfolds: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Run the recursion; returns ``(states (T, B, N), nd (K+1, B, 2N), s (K, B, E))``, K = T x unfolds.

    ``nd[k+1] = [v_{k+1} | den_k]``: each unfold's ``[num | den]`` buffer, whose num half is
    overwritten in place by the new state, so one GEMM serves both halves.
    """
    steps, batch, two_n = acc.shape
    n, e = two_n // 2, scale.shape[1]
    k_total = steps * unfolds
    opts = {"dtype": h0.dtype, "device": h0.device}
    nd_buf = torch.empty(k_total + 1, batch, two_n, **opts)
    s_buf = torch.empty(k_total, batch, e, **opts)
    nd_buf[0, :, :n] = h0
    # Per-unfold views made in one call each: Python indexing per unfold would cost more than the maths.
    nds, ss = nd_buf.unbind(0), s_buf.unbind(0)
    vs, dens = nd_buf[..., :n].unbind(0), nd_buf[..., n:].unbind(0)
    cms = cm_t.unbind(0)
    k = 0
    for acc_t in acc.unbind(0):
        cm = cms[k // unfolds if len(cms) > 1 else 0]
        for _ in range(unfolds):
            s = torch.addmm(shift, vs[k], scale, out=ss[k]).sigmoid_()
            torch.addmm(acc_t, s, scatter, out=nds[k + 1])
            vs[k + 1].addcmul_(cm, vs[k]).div_(dens[k + 1])
            k += 1
    return nd_buf[unfolds::unfolds, :, :n].clone(), nd_buf, s_buf


class _FusedSequence(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any, h0: Tensor, acc: Tensor, cm_t: Tensor, scale: Tensor, shift: Tensor, scatter: Tensor, unfolds: int
    ) -> Tensor:
        states, nd_buf, s_buf = _forward(h0, acc, cm_t, scale, shift, scatter, unfolds)
        ctx.save_for_backward(nd_buf, s_buf, cm_t, scale, scatter)
        ctx.unfolds = unfolds
        return states

    @staticmethod
    def backward(ctx: Any, g_states: Tensor) -> tuple[Tensor | None, ...]:
        nd_buf, s_buf, cm_t, scale, scatter = ctx.saved_tensors
        unfolds = ctx.unfolds
        steps, batch, n = g_states.shape
        k_total, _, e = s_buf.shape
        # g_nd[k] = [g_num | g_num * v'] (the den half with its sign flipped, folded into the matrix below).
        g_nd_buf = torch.empty(k_total, batch, 2 * n, dtype=s_buf.dtype, device=s_buf.device)
        g_z_buf = torch.empty_like(s_buf)
        scale_t = scale.t()
        signed_t = torch.cat([scatter[:, :n], -scatter[:, n:]], dim=1).t()  # [P_num | -P_den]^T
        vs, dens, ss = nd_buf[..., :n].unbind(0), nd_buf[..., n:].unbind(0), s_buf.unbind(0)
        g_nds, g_nums, g_dens = g_nd_buf.unbind(0), g_nd_buf[..., :n].unbind(0), g_nd_buf[..., n:].unbind(0)
        g_zs, g_steps, cms = g_z_buf.unbind(0), g_states.unbind(0), cm_t.unbind(0)
        g = torch.zeros_like(g_steps[0])
        for t in reversed(range(steps)):
            g = g + g_steps[t]
            cm = cms[t if len(cms) > 1 else 0]
            for k in reversed(range(t * unfolds, (t + 1) * unfolds)):
                s = ss[k]
                g_num = torch.div(g, dens[k + 1], out=g_nums[k])
                torch.mul(g_num, vs[k + 1], out=g_dens[k])
                g_z = torch.mm(g_nds[k], signed_t, out=g_zs[k]).mul_(torch.addcmul(s, s, s, value=-1.0))
                g = torch.mm(g_z, scale_t).addcmul_(g_num, cm)
        # Every parameter gradient in one reduction over all unfolds.
        rows = k_total * batch
        v_flat = nd_buf[:-1, :, :n].reshape(rows, n)
        s_flat = s_buf.reshape(rows, e)
        g_nd_flat = g_nd_buf.view(rows, 2 * n)
        g_z_flat = g_z_buf.view(rows, e)
        g_scatter = s_flat.t() @ g_nd_flat
        g_scatter[:, n:].neg_()
        per_step = (steps, unfolds, batch, 2 * n)
        g_acc = g_nd_buf.view(per_step).sum(1)
        g_acc[..., n:].neg_()
        g_cm = (g_nd_buf[..., :n] * nd_buf[:-1, :, :n]).view(steps, unfolds, batch, n).sum(1)
        return g, g_acc, g_cm.sum_to_size(cm_t.shape), v_flat.t() @ g_z_flat, g_z_flat.sum(0), g_scatter, None
