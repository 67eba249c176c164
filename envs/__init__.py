"""PyBullet gymnasium environments, installed as ``safeliquid.envs``; ``import safeliquid.envs`` registers them.

Each exposes ``env.unwrapped.model`` (control-affine, torch), ``env.unwrapped.constraints``
(a :class:`~safeliquid.safety.ConstraintSet` for the sampled scene) and
``env.unwrapped.safety_state()``; ``info`` carries ``cost`` (safety-gymnasium
convention) and barrier values ``barrier_h/<name>`` (>= 0 safe).
"""

import gymnasium as gym

ENV_IDS = ("safeliquid/Navigate-v0",)

if "safeliquid/Navigate-v0" not in gym.registry:
    gym.register(id="safeliquid/Navigate-v0", entry_point="safeliquid.envs.navigate:NavigateEnv", max_episode_steps=300)
