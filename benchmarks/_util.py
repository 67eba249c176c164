"""Helpers shared by the benchmarks: medians and p99 over repeated calls, result files, ArmReach policies."""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch


def timeit(fn: Callable[[], object], repeats: int, warmup: int = 20) -> dict[str, float]:
    """Median and p99 wall time of ``fn()`` in microseconds."""
    for _ in range(warmup):
        fn()
    times = np.empty(repeats)
    for i in range(repeats):
        t0 = time.perf_counter()
        fn()
        times[i] = time.perf_counter() - t0
    return {"median_us": float(np.median(times) * 1e6), "p99_us": float(np.percentile(times, 99) * 1e6)}


def write(name: str, payload: dict) -> Path:
    """Write ``benchmarks/results/<name>.json`` with the machine facts alongside."""
    payload = {
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "cpu": platform.processor()},
        "threads": torch.get_num_threads(),
        **payload,
    }
    path = Path(__file__).parent / "results" / f"{name}.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(payload, indent=2))
    return path


ARM = "safeliquid/ArmReach-v0"


def load_arm_task_policy(path: str) -> Any:
    """The checkpoint at ``path``, which must be an ArmReach policy with the task prior (else a named exit)."""
    from safeliquid import load_policy

    policy = load_policy(path)
    if policy.config.env_id != ARM or policy.config.prior != "task":
        got = f"prior {policy.config.prior!r} on {policy.config.env_id}"
        raise SystemExit(f"{path}: expected a policy with prior 'task' on {ARM}, got {got}")
    return policy
