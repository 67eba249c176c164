"""safeliquid: safe learned robot control with liquid time-constant networks and CBF-QP layers."""

__version__ = "0.1.0"
