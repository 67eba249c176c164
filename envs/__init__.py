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


def make_env(env_id: str, env_kwargs: dict | None = None) -> gym.Env:
    """``gym.make(env_id, **env_kwargs)`` for a safeliquid environment, with each keyword checked against the
    environment's constructor first: an unknown one raises ``ValueError`` naming it and the accepted ones."""
    import inspect

    from gymnasium.envs.registration import load_env_creator

    check_env_id(env_id)
    env_kwargs = dict(env_kwargs or {})
    accepted: list[str] = []
    for cls in load_env_creator(_ENVS[env_id][0]).__mro__:  # **options are passed on to the base classes
        params = inspect.signature(cls.__init__).parameters.values()
        accepted += [p.name for p in params if p.kind is p.KEYWORD_ONLY or (p.kind is p.POSITIONAL_OR_KEYWORD
                     and p.default is not p.empty and p.name not in accepted)]  # fmt: skip
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            break
    unknown = sorted(set(env_kwargs) - set(accepted))
    if unknown:
        raise ValueError(f"env_kwargs {unknown} are not options of {env_id}; it takes {', '.join(accepted)}")
    return gym.make(env_id, **env_kwargs)
