"""PyBullet gymnasium environments, installed as ``safeliquid.envs``."""
