"""Model-based expert controllers (privileged state, CBF filter) for demonstrations: ``make_expert(env_id)``.

Usage::

    expert = make_expert("safeliquid/Navigate-v0")
    obs, info = env.reset(seed=0)
    expert.reset(env)
    action = expert(env)
"""

from safeliquid.envs import check_env_id
from safeliquid.envs.experts._common import FilteredExpert


def make_expert(env_id: str) -> FilteredExpert:
    """A fresh expert for ``env_id`` (call ``expert.reset(env)`` after each ``env.reset``)."""
    check_env_id(env_id)
    if env_id == "safeliquid/Navigate-v0":
        from safeliquid.envs.experts.navigate import NavigateExpert

        return NavigateExpert()
    if env_id == "safeliquid/CartPoleRail-v0":
        from safeliquid.envs.experts.cartpole import CartPoleRailExpert

        return CartPoleRailExpert()
    from safeliquid.envs.experts.arm import ArmReachExpert

    return ArmReachExpert()


__all__ = ["FilteredExpert", "make_expert"]
