"""CartPoleRail expert: energy-shaping swing-up, LQR balance, and the CBF filter on the rail."""

from __future__ import annotations

import numpy as np
import scipy.linalg
import torch

from safeliquid.envs.cartpole_rail import CartPoleRailEnv, wrap_angle
from safeliquid.envs.experts._common import FilteredExpert


class CartPoleRailExpert(FilteredExpert):
    """Åström–Furuta energy pumping ``x'' = k E theta_dot cos(theta)`` (``E = 0`` upright at rest)
    with a centring term, switched to an LQR on the linearised model near upright; the
    commanded acceleration becomes a force through the model, then the rail filter.
    """

    def __init__(self, energy_gain: float = 6.0, catch_angle: float = 0.35) -> None:
        super().__init__()
        self.energy_gain, self.catch_angle = energy_gain, catch_angle
        self._lqr: np.ndarray | None = None

    def reset(self, env: CartPoleRailEnv) -> None:
        super().reset(env)
        model = env.unwrapped.model
        x0 = torch.zeros(1, 4, dtype=torch.float64)
        a = torch.autograd.functional.jacobian(lambda x: model.f(x)[0], x0)[:, 0].numpy()
        b = model.g(x0)[0].numpy()
        q, r = np.diag([2.0, 10.0, 1.0, 1.0]), np.array([[0.05]])
        s = scipy.linalg.solve_continuous_are(a, b, q, r)
        self._lqr = np.linalg.solve(r, b.T @ s)

    def reference(self, env: CartPoleRailEnv, state: np.ndarray) -> np.ndarray:
        x, th, xd, thd = state
        th = float(wrap_angle(th))
        if abs(th) < self.catch_angle:
            assert self._lqr is not None
            return -self._lqr @ np.array([x, th, xd, thd])
        m = env.model
        energy = 0.5 * (m.inertia + m.mp * m.l**2) * thd**2 + m.mp * m.grav * m.l * (np.cos(th) - 1.0)
        accel = self.energy_gain * energy * thd * np.cos(th) - 1.0 * x - 1.0 * xd
        # The force that gives this cart acceleration: x'' = f_x(s) + g_x(s) u.
        s = torch.tensor(state).unsqueeze(0)
        fx, gx = float(m.f(s)[0, 2]), float(m.g(s)[0, 2, 0])
        return np.array([(accel - fx) / gx])
