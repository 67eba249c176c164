"""The implicit safe set of a backup controller (Gurriet, Mote, Singletary, Ames et al. 2020).

Some safe sets cannot be written as a closed-form barrier that is control invariant under the input
bounds: a cart whose pole is spinning cannot always brake before the rail's end, because the pole's
reaction takes the force the braking needs. A backup controller ``u_b`` (brake, then hold) gives one
without a formula: its **implicit safe set**

    S_b = {x : the backup's rollout from x keeps every barrier >= margin at every sample and
               reaches the terminal set T within the horizon},

with ``T`` a set the backup keeps for ever (a cart held at rest, far enough from the ends). ``S_b`` is
control invariant under the bounds **by construction**: if ``x`` is in ``S_b``, the backup's own next
sample is, since its rollout is the tail of ``x``'s. The layer keeps the state in ``S_b`` with one test
per control step (a predictive safety filter with one candidate): it sends the QP's input only if the
model's next sample under it is again in ``S_b``, and otherwise the backup. The rollout is the model's
own sample-and-hold prediction, so the argument holds to the model's accuracy (the environment's
``sample_margin``), and ``margin`` covers how that error grows along the rollout.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from safeliquid.safety.constraints import ConstraintSet


def rollout(constraints: ConstraintSet, x: np.ndarray, periods: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Roll the backup out from ``x (B, n)`` (numpy) with the model: ``(kept (B,) bool, end (B, n))``. ``kept``:
    every sample up to the first terminal one has every barrier ``>= margin``, and a terminal one comes within
    ``periods`` (the backup's ``horizon`` if None); ``end``: the state where each rollout stopped."""
    backup = constraints.backup
    if backup is None or backup.terminal is None:
        raise ValueError("rollout needs a constraint set whose backup has a horizon and a terminal set")
    periods = backup.horizon if periods is None else periods
    state = np.array(x, dtype=np.float64)
    alive = np.ones(state.shape[0], dtype=bool)
    kept = np.zeros(state.shape[0], dtype=bool)
    for step in range(periods + 1):
        idx = np.flatnonzero(alive)
        s = state[idx]
        low = (constraints.values_numpy(s) < backup.margin).any(-1)
        done = ~low & np.asarray(backup.terminal(s), dtype=bool)
        kept[idx[done]] = True
        alive[idx[low | done]] = False
        idx = np.flatnonzero(alive)
        if not idx.size or step == periods:
            break
        u = np.asarray(backup.control(state[idx]), dtype=np.float64)
        state[idx] = constraints.model.step_numpy(state[idx], u, backup.dt)
    return kept, state


def keeps(constraints: ConstraintSet, x: np.ndarray) -> np.ndarray:
    """``(B,)`` bool: is each state of ``x (B, n)`` in the backup's implicit safe set? The backup's compiled
    ``keeps`` where it has one, else the generic :func:`rollout`."""
    backup = constraints.backup
    assert backup is not None and backup.implicit
    if backup.keeps is not None:
        return np.asarray(backup.keeps(np.asarray(x, dtype=np.float64)), dtype=bool)
    return rollout(constraints, x)[0]
