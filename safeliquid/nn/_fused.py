"""The LTC fused semi-implicit unfolds as one autograd node with a hand-derived backward.

For the synapse-list form (see :mod:`safeliquid.nn.ltc`), one unfold is

    s   = sigmoid(v S + c)                 s: (B, E)
    nd  = acc + s P = [num | den]          nd: (B, 2N)
    v'  = (cm_t * v + num) / den           v': (B, N)

with ``S (N, E)``, ``c (E,)``, ``P (E, 2N)``, ``acc (B, 2N)`` (sensory drive and
leak; ``cm_t + eps`` already in the ``den`` half) and ``cm_t (B or 1, N)``.
Autograd would record ~6 nodes per unfold; for the small tensors of a control
policy the per-node overhead dominates the arithmetic, so the whole loop is one
node here. Its backward is the adjoint of the recursion above:

    g_num = g / den,   g_den = -g_num * v',   g_nd = [g_num | g_den]
    g_s   = g_nd P^T,  g_z = g_s * s (1 - s)
    g_v   = g_z S^T + g_num * cm_t          (into the previous unfold)

and the parameter gradients accumulate ``s^T g_nd`` (P), ``v^T g_z`` (S),
``sum g_z`` (c), ``g_nd`` (acc) and ``g_num * v`` (cm_t).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


def fused_unfolds(
    v: Tensor, acc: Tensor, cm_t: Tensor, scale: Tensor, shift: Tensor, scatter: Tensor, unfolds: int
) -> Tensor:
    """``unfolds`` fused LTC steps; shapes as in the module docstring. Differentiable in every tensor."""
    if torch.is_grad_enabled() and any(t.requires_grad for t in (v, acc, cm_t, scale, shift, scatter)):
        return _FusedUnfolds.apply(v, acc, cm_t, scale, shift, scatter, unfolds)
    return _forward(v, acc, cm_t, scale, shift, scatter, unfolds, None)


def _forward(
    v: Tensor,
    acc: Tensor,
    cm_t: Tensor,
    scale: Tensor,
    shift: Tensor,
    scatter: Tensor,
    unfolds: int,
    saved: list[tuple[Tensor, Tensor, Tensor]] | None,
) -> Tensor:
    n = v.shape[1]
    # Two half-width matmuls beat one full-width matmul plus a split at these sizes.
    acc_num, acc_den = acc[:, :n], acc[:, n:]
    scatter_num, scatter_den = scatter[:, :n], scatter[:, n:]
    for _ in range(unfolds):
        s = torch.addmm(shift, v, scale).sigmoid_()
        den = torch.addmm(acc_den, s, scatter_den)
        v_next = torch.addmm(acc_num, s, scatter_num).addcmul_(cm_t, v).div_(den)
        if saved is not None:
            saved.append((v, s, den))
        v = v_next
    return v


class _FusedUnfolds(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, v, acc, cm_t, scale, shift, scatter, unfolds):
        saved: list[tuple[Tensor, Tensor, Tensor]] = []
        out = _forward(v, acc, cm_t, scale, shift, scatter, unfolds, saved)
        ctx.trace = saved
        ctx.save_for_backward(out, cm_t, scale, scatter)
        ctx.acc_shape = acc.shape
        return out

    @staticmethod
    def backward(ctx: Any, g_out: Tensor):
        out, cm_t, scale, scatter = ctx.saved_tensors
        trace: list[tuple[Tensor, Tensor, Tensor]] = ctx.trace
        n = out.shape[1]
        g_scale = torch.zeros_like(scale)
        g_scatter = torch.zeros_like(scatter)
        g_z_sum = torch.zeros_like(trace[0][1])
        g_acc = torch.zeros(out.shape[0], 2 * n, dtype=out.dtype, device=out.device)
        g_cm = torch.zeros_like(out)
        g = g_out
        v_next = out
        scale_t, scatter_t = scale.t(), scatter.t()
        for v, s, den in reversed(trace):
            g_num = g / den
            g_nd = torch.cat([g_num, g_num * v_next], dim=1)
            g_nd[:, n:].neg_()
            g_acc += g_nd
            g_scatter.addmm_(s.t(), g_nd)
            g_z = torch.mm(g_nd, scatter_t).mul_(torch.addcmul(s, s, s, value=-1.0))
            g_scale.addmm_(v.t(), g_z)
            g_z_sum += g_z
            g_cm.addcmul_(g_num, v)
            g = torch.addmm(g_num * cm_t, g_z, scale_t)
            v_next = v
        g_cm = g_cm if cm_t.shape[0] == g_cm.shape[0] else g_cm.sum(0, keepdim=True)
        g_acc = g_acc if ctx.acc_shape[0] == g_acc.shape[0] else g_acc.sum(0, keepdim=True)
        return g, g_acc, g_cm, g_scale, g_z_sum.sum(0), g_scatter, None
