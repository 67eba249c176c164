"""A batch-1 LTC step for control loops: the fused solver in four numpy calls per unfold.

At batch 1 every tensor op costs more in dispatch than in arithmetic, so the
control-rate path folds everything constant into two augmented matrices and
keeps the state in one buffer ``buf = [s (E), v (N), 1]``:

    z      = [v, 1] @ [[S], [c]]                         (E,)
    s      = sigmoid(z)                                 written into buf[:E]
    nd     = [s, v, 1] @ [[P], [diag(cm/h) | 0], [acc]]  (2N,)  = [num | den]
    v      = num / den                                  written into buf[E:E+N]

where ``acc = [g_leak v_leak + sensory g E | g_leak + sensory g + cm/h + eps]``
is computed once per step the same way from ``[x, 1]``. The input affine map is
folded into the sensory matrix. This is the same arithmetic as
:func:`safeliquid.nn._fused.fused_unfolds` (tests hold them equal); it is used
only with gradients off, on CPU, at batch 1, with a float ``dt``.

Not thread-safe: one kernel (one cell) per control loop.
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit
from torch import Tensor


class BatchOneKernel:
    """Numpy buffers and matrices for one ``(cell parameters, dt)`` pair; see the module docstring."""

    def __init__(
        self,
        rec_scale: Tensor,
        rec_shift: Tensor,
        rec_scatter: Tensor,
        sens_scale: Tensor,
        sens_shift: Tensor,
        sens_scatter: Tensor,
        leak: Tensor,
        cm: Tensor,
        in_w: Tensor | None,
        in_b: Tensor | None,
        out_w: Tensor | None,
        out_b: Tensor | None,
        n_out: int,
        unfolds: int,
        epsilon: float,
    ) -> None:
        def np_(t: Tensor) -> np.ndarray:
            return t.detach().cpu().numpy()

        n, e = rec_scale.shape
        k, es = sens_scale.shape
        dtype = np_(rec_scale).dtype
        self.n, self.e, self.k, self.n_out, self.unfolds, self.eps = n, e, k, n_out, unfolds, epsilon
        self.dtype = dtype
        # Recurrent pre-activation: [v, 1] @ [[S], [c]].
        self.s_aug = np.concatenate([np_(rec_scale), np_(rec_shift)[None]], 0).astype(dtype)
        # Sensory pre-activation with the input map folded in: [x, 1] @ [[diag(w) Ss], [b Ss + cs]].
        ss, cs = np_(sens_scale), np_(sens_shift)
        w = np.ones(k, dtype) if in_w is None else np_(in_w)
        b = np.zeros(k, dtype) if in_b is None else np_(in_b)
        self.ss_aug = np.concatenate([w[:, None] * ss, (b @ ss + cs)[None]], 0).astype(dtype)
        self.ps_aug = np.concatenate([np_(sens_scatter), np_(leak)[None]], 0).astype(dtype)
        self.cm = np_(cm)
        self.out_w = None if out_w is None else np_(out_w)
        self.out_b = None if out_b is None else np_(out_b)
        # Buffers.
        self.p_aug = np.zeros((e + n + 1, 2 * n), dtype)
        self.p_aug[:e] = np_(rec_scatter)
        self.buf = np.zeros(e + n + 1, dtype)
        self.buf[-1] = 1.0
        self.nd = np.zeros(2 * n, dtype)
        self.xbuf = np.ones(k + 1, dtype)
        self.sbuf = np.ones(es + 1, dtype)
        self.leak_den = self.ps_aug[-1, n:].copy()
        self._dt: float | None = None
        # Views into the buffers, made once (numpy slicing per call costs more than the arithmetic).
        es = self.sbuf.shape[0] - 1
        self._x, self._zs, self._acc_row = self.xbuf[:k], self.sbuf[:es], self.p_aug[-1]
        self._z, self._va, self._v = self.buf[:e], self.buf[e:], self.buf[e : e + n]
        self._num, self._den = self.nd[:n], self.nd[n:]
        self._y = self.buf[None, e : e + n_out]
        self._h = self.buf[None, e : e + n]

    def set_dt(self, dt: float) -> None:
        """Write ``cm / h`` (h = dt / unfolds) into the diagonal block and the ``den`` constant."""
        if dt == self._dt:
            return
        n, e = self.n, self.e
        cm_t = self.cm * (self.unfolds / dt)
        self.p_aug[e : e + n, :n] = np.diag(cm_t)
        self.ps_aug[-1, n:] = self.leak_den + cm_t + self.eps
        self._dt = dt

    def step(self, x: np.ndarray, h: np.ndarray, dt: float) -> tuple[np.ndarray, np.ndarray]:
        """``x (in,)``, ``h (N,)`` -> fresh arrays ``y (1, out)``, ``h_next (1, N)``."""
        if dt != self._dt:
            self.set_dt(dt)
        buf, nd, zs, z, va, v, num, den = self.buf, self.nd, self._zs, self._z, self._va, self._v, self._num, self._den
        self._x[:] = x
        np.dot(self.xbuf, self.ss_aug, out=zs)
        expit(zs, out=zs)
        np.dot(self.sbuf, self.ps_aug, out=self._acc_row)  # acc, the last row of P_aug
        v[:] = h
        s_aug, p_aug = self.s_aug, self.p_aug
        for _ in range(self.unfolds):
            np.dot(va, s_aug, out=z)
            expit(z, out=z)
            np.dot(buf, p_aug, out=nd)
            np.divide(num, den, out=v)
        y = self._y
        if self.out_w is not None:
            y = y * self.out_w  # a new array: the buffer is never handed out
        if self.out_b is not None:
            y = y + self.out_b
        return (y.copy() if y is self._y else y), self._h.copy()
