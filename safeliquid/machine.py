"""The machine a result was made on: what an absolute figure, or a training run, needs beside it.

Training is deterministic on one CPU model, not across models: the vector kernels' different rounding grows
over a thousand updates into different policies (statistically alike ones), so a record names its CPU.
"""

from __future__ import annotations

import os
import platform
from typing import Any

import torch


def _cpuinfo(field: str) -> str | None:
    """The value of ``field`` on its first line in ``/proc/cpuinfo`` (None where there is none)."""
    try:
        with open("/proc/cpuinfo") as fh:
            return next((line.split(":", 1)[1].strip() for line in fh if line.startswith(field)), None)
    except OSError:
        return None


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``; ``platform.processor()`` where there is none)."""
    return _cpuinfo("model name") or platform.processor() or "unknown"


def vector_extensions() -> str:
    """The CPU's vector extensions that change how torch's kernels round: ``"fma,avx2"``."""
    flags = (_cpuinfo("flags") or "").split()
    return ",".join(f for f in ("fma", "avx2", "avx512f") if f in flags)


def machine() -> dict[str, Any]:
    """The CPU model, its vector extensions and cores, and the Python and torch versions."""
    return {
        "cpu": cpu_model(),
        "vector": vector_extensions(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


__all__ = ["cpu_model", "machine", "vector_extensions"]
