"""PyBullet gymnasium environments, installed as ``safeliquid.envs``; ``import safeliquid.envs`` registers them.

Each exposes ``env.unwrapped.model`` (control-affine, torch), ``env.unwrapped.constraints``
(a :class:`~safeliquid.safety.ConstraintSet` for the sampled scene) and
``env.unwrapped.safety_state()``; ``info`` carries ``cost`` (safety-gymnasium
convention), barrier values ``barrier_h/<name>`` (>= 0 safe), ``barrier_min_h``,
``contact``, ``action_clipped`` and ``is_success``.
"""

import gymnasium as gym

# id -> (entry point, max_episode_steps)
_ENVS = {
    "safeliquid/Navigate-v0": ("safeliquid.envs.navigate:NavigateEnv", 300),
    "safeliquid/CartPoleRail-v0": ("safeliquid.envs.cartpole_rail:CartPoleRailEnv", 500),
    "safeliquid/ArmReach-v0": ("safeliquid.envs.arm_reach:ArmReachEnv", 250),
}
ENV_IDS = tuple(_ENVS)

for _id, (_entry, _steps) in _ENVS.items():
    if _id not in gym.registry:
        gym.register(id=_id, entry_point=_entry, max_episode_steps=_steps)


def check_env_id(env_id: str) -> str:
    """Return ``env_id`` if it is one of :data:`ENV_IDS`, else raise naming the known ones."""
    if env_id not in _ENVS:
        raise ValueError(f"unknown environment id {env_id!r}; known: {', '.join(ENV_IDS)}")
    return env_id
