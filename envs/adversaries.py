"""The adversaries each environment is tested and benchmarked against: the generic ones of
:mod:`safeliquid.safety.adversaries` and the environment's own (pumping the pole's energy, ramming the arm's
joint limits, driving the arm at the sphere at speed)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from safeliquid.safety.adversaries import Adversary, BangBang, RandomActions, Tangent, TowardConstraint


class PumpPole(Adversary):
    """CartPoleRail: push the cart so as to pump energy into the pole, ``u = -F sign(cos(theta) theta')``
    (the pole's energy changes at ``-m l cos(theta) theta' x''``), and spin it as fast as the rail allows."""

    name = "pump-pole"

    def act(self, env: Any) -> np.ndarray:
        _, theta, _, theta_dot = env.unwrapped.safety_state()
        push = -np.sign(np.cos(theta) * theta_dot) if abs(theta_dot) > 1e-3 else 1.0
        return self.corner(np.array([push]))


class ArmAtSphere(Adversary):
    """ArmReach: full torque along ``J^T (sphere - end effector)``: the end effector at the sphere as fast
    as the torque limits allow (it gathers speed over the approach)."""

    name = "arm-at-sphere"

    def act(self, env: Any) -> np.ndarray:
        import torch

        base = env.unwrapped
        x = torch.as_tensor(base.safety_state()[None])
        J = base.model.task_jacobian(x)[0].numpy()
        return self.corner(J.T @ (base.obstacle[:3] - base.end_effector()))


ADVERSARIES: dict[str, tuple[Callable[[], Adversary], ...]] = {
    "safeliquid/Navigate-v0": (RandomActions, BangBang, TowardConstraint, Tangent),
    "safeliquid/CartPoleRail-v0": (RandomActions, BangBang, TowardConstraint, PumpPole),
    "safeliquid/ArmReach-v0": (
        RandomActions,
        BangBang,
        TowardConstraint,
        Tangent,
        lambda: TowardConstraint(("joint",), "joint-ram"),
        ArmAtSphere,
    ),
}


def adversaries(env_id: str) -> list[Adversary]:
    """Fresh instances of the adversaries for ``env_id`` (one of :data:`safeliquid.envs.ENV_IDS`)."""
    if env_id not in ADVERSARIES:
        raise ValueError(f"no adversaries for {env_id!r}; known: {', '.join(ADVERSARIES)}")
    return [make() for make in ADVERSARIES[env_id]]
