"""Policy architectures and shipped checkpoints, installed as ``safeliquid.policies``.

``LiquidBarrierPolicy`` composes an encoder, a cell from :func:`safeliquid.nn.make_cell`
and the BarrierNet layer. Shipped checkpoints (``*.pt`` next to this file) are
listed by :func:`shipped` and loaded with :func:`load_policy` (also :func:`safeliquid.load_policy`).
"""

from pathlib import Path

from safeliquid.policies.checkpoint import load_policy, save_policy
from safeliquid.policies.config import SAFETY_MODES, PolicyConfig, gain_group
from safeliquid.policies.liquid_barrier import LiquidBarrierPolicy
from safeliquid.policies.scene import scene_rows

SHIPPED_DIR = Path(__file__).parent


def shipped(env_id: str) -> Path:
    """The shipped LTC-BarrierNet checkpoint for ``env_id`` (raises naming the ones that exist)."""
    name = env_id.split("/")[-1].split("-")[0].lower()
    path = SHIPPED_DIR / f"{name}_ltc_barrier.pt"
    if not path.exists():
        have = sorted(p.name for p in SHIPPED_DIR.glob("*.pt"))
        raise FileNotFoundError(f"no shipped policy for {env_id} ({path.name}); shipped: {have or 'none'}")
    return path


__all__ = [
    "SAFETY_MODES",
    "LiquidBarrierPolicy",
    "PolicyConfig",
    "gain_group",
    "load_policy",
    "save_policy",
    "scene_rows",
    "shipped",
]
