"""safeliquid: safe learned robot control with liquid time-constant networks and CBF-QP layers."""

from __future__ import annotations

from typing import TYPE_CHECKING

from safeliquid._version import __version__

if TYPE_CHECKING:
    from safeliquid.policies import LiquidBarrierPolicy


def load_policy(path: str) -> LiquidBarrierPolicy:
    """Restore a policy checkpoint (:func:`safeliquid.policies.load_policy`). The package's root imports no
    layer itself, so that ``import safeliquid.qp`` stays light: this re-export imports on first use."""
    from safeliquid.policies import load_policy as _load

    return _load(path)


__all__ = ["__version__", "load_policy"]
