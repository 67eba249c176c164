"""Model-based expert controllers (privileged state, CBF filter) for demonstrations: ``make_expert(env_id)``.

Usage::

    expert = make_expert("safeliquid/Navigate-v0")
    obs, info = env.reset(seed=0)
    expert.reset(env)
    action = expert(env)
"""

from safeliquid.envs import check_env_id
from safeliquid.envs.experts._common import FilteredExpert
from safeliquid.envs.experts.arm import ArmReachExpert
from safeliquid.envs.experts.cartpole import CartPoleRailExpert
from safeliquid.envs.experts.navigate import NavigateExpert

# env id -> its expert's class: the registry the training code looks experts up in
EXPERTS: dict[str, type[FilteredExpert]] = {
    "safeliquid/Navigate-v0": NavigateExpert,
    "safeliquid/CartPoleRail-v0": CartPoleRailExpert,
    "safeliquid/ArmReach-v0": ArmReachExpert,
}


def make_expert(env_id: str) -> FilteredExpert:
    """A fresh expert for ``env_id`` (call ``expert.reset(env)`` after each ``env.reset``)."""
    return EXPERTS[check_env_id(env_id)]()
