"""Input validation shared by every public entry point.

Each check raises ``ValueError`` with a message that names the offending
argument, what was received and what was expected, so that a user's mistake
never surfaces as a shape error from deep inside torch, or as a silent NaN.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def check_tensor(name: str, x: object, shape: tuple[int | str, ...], finite: bool = True) -> Tensor:
    """Check that ``x`` is a finite floating tensor of ``shape``.

    ``shape`` holds ints (fixed sizes) and strings (symbolic sizes such as
    ``"B"`` that match anything), e.g. ``("B", 8)``. ``finite=False`` skips the
    NaN/inf check for callers that do it themselves in one pass.

    Returns ``x`` unchanged. The finiteness check is one reduction, cheap enough
    for a control loop.
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape {_fmt(shape)}, got {type(x).__name__}")
    if x.dim() != len(shape) or any(isinstance(s, int) and s != d for s, d in zip(shape, x.shape, strict=True)):
        raise ValueError(f"{name} must have shape {_fmt(shape)}, got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    # One reduction: the sum is finite unless an entry is NaN/inf (or the sum overflows,
    # which the exact check below tells apart).
    if finite and not math.isfinite(float(x.detach().sum())) and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or inf; expected finite values")
    return x


def check_dt(dt: float | Tensor, batch: int) -> float | Tensor:
    """Check a time step: a positive finite float, or a ``(B,)`` tensor of them.

    A 0-d tensor is returned as a float.
    """
    if isinstance(dt, Tensor):
        if dt.dim() == 0:
            dt = float(dt)
        else:
            if dt.shape != (batch,):
                raise ValueError(
                    f"dt must be a positive float or a tensor of shape ({batch},) (one step per sample), "
                    f"got shape {tuple(dt.shape)}"
                )
            d = dt.detach()
            if not bool(torch.isfinite(d).all()) or not bool((d > 0).all()):
                raise ValueError(f"dt must be positive and finite for every sample, got min {float(d.min())}")
            return dt
    if isinstance(dt, bool) or not isinstance(dt, (int, float)):
        raise TypeError(f"dt must be a positive float or a ({batch},) tensor, got {type(dt).__name__}")
    if not (math.isfinite(dt) and dt > 0):
        raise ValueError(f"dt must be a positive finite number, got {dt}")
    return float(dt)


def _fmt(shape: tuple[int | str, ...]) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"
