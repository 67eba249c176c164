"""Compile (or load from numba's cache) the environments' compiled code ahead of the first episode: ``make``
runs :func:`warmup` at install, so that no episode, and no timing, pays for numba's compilation."""

from __future__ import annotations

import time

import numpy as np

from safeliquid.envs import arm_terms, cartpole_backup
from safeliquid.safety.braking import braking_terms, braking_values


def warmup() -> float:
    """The cart-pole backup's rollout test, the arm's kinematics, dynamics and backup, and the braking
    barriers' terms, each compiled on its real shapes. Returns the seconds taken."""
    t0 = time.perf_counter()
    cartpole_backup.warmup()
    arm_terms.warmup()
    x, centers, reach = np.zeros((1, 4)), np.ones((1, 2)), np.ones(1)
    braking_terms(x, centers, reach, 1.0, 0.1, 1.0)
    braking_values(x, centers, reach, 1.0, 0.1)
    return time.perf_counter() - t0
