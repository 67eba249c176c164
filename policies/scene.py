"""The gain-free HOCBF rows of a scene, as the policy's batched layer takes them: padded per batch so that
one batch can mix episodes of different scenes."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from safeliquid.policies.config import gain_group
from safeliquid.safety import ConstraintSet

PAD_RHS = 1.0  # right-hand side of padding rows: 0 u <= 1 is never active


def defaults_and_groups(
    constraints: ConstraintSet, groups: list[str], max_degree: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-barrier default gains ``(K, R)``, gain-group index ``(K,)`` (-1: not learned) and degree ``(K,)``."""
    group = np.full(len(constraints.barriers), -1, dtype=np.int64)
    for i, bar in enumerate(constraints.barriers):
        name = gain_group(bar.name)
        if name in groups:
            group[i] = groups.index(name)
    return constraints.default_gains(max_degree), group, constraints.degrees.numpy()


def flat_gains(
    constraints: ConstraintSet, scene: tuple[np.ndarray, np.ndarray, np.ndarray], mult: np.ndarray
) -> np.ndarray:
    """Gain multipliers ``mult (..., groups, R)`` -> the layer's flat gains ``(..., gain_count)`` for the scene of
    ``constraints`` (``scene`` its :func:`defaults_and_groups`): each barrier's defaults, scaled by its group's
    multipliers where the group is learned."""
    default, group, _ = scene
    learned = (group >= 0)[:, None]
    table = default * np.where(learned, mult[..., np.maximum(group, 0), :], 1.0)  # (..., K, R)
    return table[(..., *constraints.gain_index())]


def scene_rows(constraints: ConstraintSet, x: Tensor, groups: list[str], max_degree: int = 2) -> dict[str, Tensor]:
    """What :meth:`LiquidBarrierPolicy.project` needs at states ``x (N, n)`` of one scene (float64)."""
    terms = constraints.terms(x)
    n, k = x.shape[0], len(constraints.barriers)
    if k and int(terms.degree.max()) > max_degree:
        raise ValueError(f"a barrier has relative degree {int(terms.degree.max())} > max_degree {max_degree}")
    L = torch.zeros(n, k, max_degree + 1, dtype=torch.float64)
    L[..., : terms.L.shape[-1]] = terms.L
    default, group, _ = defaults_and_groups(constraints, groups, max_degree)
    return {
        "A": terms.A.double(),
        "L": L,
        "degree": terms.degree.expand(n, k).clone(),
        "group": torch.from_numpy(group).expand(n, k).clone(),
        "default": torch.from_numpy(default).expand(n, k, max_degree).clone(),
        "mask": torch.ones(n, k, dtype=torch.bool),
    }
