"""Record the shipped policies' actions on fixed inputs: ``python tools/record_shipped_actions.py``.

For each environment, one held-out episode (seed 2,000,000) driven by its shipped policy, 100 steps: the
observations, the states and the actions are written to ``tests/data/shipped_actions.npz``.
``tests/test_shipped_actions.py`` feeds the same observations and states to the policies and asks for the
same actions to 1e-9: a refactor that changes what a shipped policy does fails it. Re-record only when a
change of the actions is intended, and say why in the commit.
"""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

import safeliquid.envs  # noqa: F401 - registers the environments
from safeliquid.envs import ENV_IDS
from safeliquid.machine import cpu_model, vector_extensions
from safeliquid.policies import load_policy, shipped

OUT = Path(__file__).resolve().parent.parent / "tests" / "data" / "shipped_actions.npz"
SEED, STEPS = 2_000_000, 100


def machine() -> str:
    """The CPU model and the torch and numba versions: on another CPU, torch's and numba's kernels may round
    differently (vector widths, fused multiply-adds), so the test is exact only where these match."""
    import numba

    return f"{cpu_model()} ({vector_extensions()}) | torch {torch.__version__} | numba {numba.__version__}"


def record(env_id: str) -> dict[str, np.ndarray]:
    env = gym.make(env_id)
    policy = load_policy(shipped(env_id))
    obs, _ = env.reset(seed=SEED)
    policy.reset()
    rows: dict[str, list[np.ndarray]] = {"obs": [], "state": [], "action": []}
    for _ in range(STEPS):
        base = env.unwrapped
        state = base.safety_state()
        action = policy.act(obs, state, base.constraints)
        for key, value in (("obs", obs), ("state", state), ("action", action)):
            rows[key].append(np.asarray(value, dtype=np.float64))
        obs, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            break
    env.close()
    return {key: np.stack(value) for key, value in rows.items()}


def main() -> None:
    torch.set_num_threads(1)
    arrays = {}
    for env_id in ENV_IDS:
        name = env_id.split("/")[1]
        for key, value in record(env_id).items():
            arrays[f"{name}/{key}"] = value
    OUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUT, machine=np.array(machine()), **arrays)
    print("wrote", OUT, {k: v.shape for k, v in arrays.items() if k.endswith("/action")})


if __name__ == "__main__":
    main()
