"""safeliquid: safe learned robot control with liquid time-constant networks and CBF-QP layers."""

__version__ = "0.1.0"


def load_policy(path: str) -> object:
    """Restore a policy checkpoint (see :func:`safeliquid.checkpoint.load_policy`)."""
    from safeliquid.checkpoint import load_policy as _load

    return _load(path)


__all__ = ["__version__", "load_policy"]
