"""A policy's checkpoint: one file with its config and weights (:func:`save_policy`), restored on any machine
(:func:`load_policy`) with every defect named (:class:`~safeliquid.checkpoint.CheckpointError`). The file I/O
itself (atomic writes, named read errors) is :mod:`safeliquid.checkpoint`'s."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from safeliquid._version import __version__
from safeliquid.checkpoint import FORMAT, VERSION, CheckpointError, atomic_save, read
from safeliquid.policies.config import PolicyConfig
from safeliquid.policies.liquid_barrier import LiquidBarrierPolicy


def save_policy(policy: LiquidBarrierPolicy, path: str | os.PathLike, extra: dict[str, Any] | None = None) -> Path:
    """Write ``policy`` (a :class:`~safeliquid.policies.LiquidBarrierPolicy`) to one file, atomically."""
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "safeliquid": __version__,
        "config": policy.config.to_dict(),
        "state_dict": policy.state_dict(),
        "extra": extra or {},
    }
    return atomic_save(payload, path)


def load_policy(path: str | os.PathLike) -> LiquidBarrierPolicy:
    """Restore a policy saved by :func:`save_policy` on any machine (CPU), ready for ``reset()``/``act()``."""
    obj = read(path, "policy checkpoint")
    if obj.get("format") != FORMAT:
        raise CheckpointError(f"policy checkpoint {path} is not a safeliquid policy (format {obj.get('format')!r})")
    if obj.get("version") != VERSION:
        raise CheckpointError(
            f"policy checkpoint {path} has format version {obj.get('version')!r}; this safeliquid reads version "
            f"{VERSION} (written by safeliquid {obj.get('safeliquid', '?')})"
        )
    for key in ("config", "state_dict"):
        if not isinstance(obj.get(key), dict):
            raise CheckpointError(f"policy checkpoint {path} lacks its {key!r} entry")
    try:
        config = PolicyConfig(**obj["config"])
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"policy checkpoint {path} has an incompatible config: {err}") from None
    policy = LiquidBarrierPolicy(config)
    try:
        policy.load_state_dict(obj["state_dict"])
    except RuntimeError as err:
        raise CheckpointError(
            f"policy checkpoint {path}: weights do not fit the architecture in its config: "
            f"{str(err).splitlines()[0][:200]}"
        ) from None
    for name, value in obj["state_dict"].items():
        if torch.is_tensor(value) and value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise CheckpointError(f"policy checkpoint {path}: parameter {name!r} contains NaN or inf")
    policy.eval()
    return policy
