"""Helpers shared by the benchmarks: medians and p99 over repeated calls, result files, ArmReach policies."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from safeliquid.machine import machine as this_machine


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


def machine() -> dict[str, Any]:
    """What an absolute figure needs beside it: the CPU, its cores, the versions, the date and the commit."""
    try:
        cwd = Path(__file__).parent
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=cwd, capture_output=True, text=True)
        # Uncommitted code, not the result files an earlier benchmark of the same sitting rewrote.
        code = ["--", ":(top)", ":(top,exclude)benchmarks/results"]
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", *code], cwd=cwd,
                               capture_output=True, text=True)  # fmt: skip
        revision = commit.stdout.strip() + ("+changes" if dirty.stdout.strip() else "")
    except OSError:
        revision = ""
    return {
        **this_machine(), "date": time.strftime("%Y-%m-%d"), "commit": revision,
        "cartpole_steps_per_s": reference_rate(),
    }  # fmt: skip


def reference_rate(steps: int = 20_000) -> int:
    """gymnasium's ``CartPole-v1`` steps per second (pure Python, fixed actions): the machine's speed at the
    time of the run, so that absolute figures from different runs can be compared (this VM's varies 2-3x)."""
    env = gym.make("CartPole-v1")
    env.reset(seed=0)
    t0 = time.perf_counter()
    for i in range(steps):
        if any(env.step(i % 2)[2:4]):
            env.reset()
    rate = steps / (time.perf_counter() - t0)
    env.close()
    return round(rate)


def write(name: str, payload: dict) -> Path:
    """Write ``benchmarks/results/<name>.json`` with the machine facts (:func:`machine`) alongside."""
    payload = {
        "machine": machine(),
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
