"""Policy architectures and shipped checkpoints, installed as ``safeliquid.policies``."""
