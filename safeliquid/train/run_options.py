"""What every training run shares, whatever the algorithm: the environment, the policy's network and safety
layer, the seed, the run folder and its evaluations (:class:`RunOptions`), and the policy's configuration
built from them and the environment (:func:`policy_config`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium as gym

from safeliquid.envs import check_env_id
from safeliquid.nn import CELLS
from safeliquid.options import option, validate
from safeliquid.policies import SAFETY_MODES, PolicyConfig, gain_group
from safeliquid.policies.config import PRIORS

EVAL_SEED = 1_000_000  # evaluation seeds start here, far from training seeds
HELD_OUT_SEED = 2_000_000  # eval/rollout/demo/bench/study seeds: training selects checkpoints on 1,000,000+


@dataclass
class RunOptions:
    """The options of every training algorithm (``safeliquid train --algo ...``), each declared once."""

    env_id: str = option("safeliquid/Navigate-v0", "environment id", check=check_env_id, flag="env")
    cell: str = option("ltc", "the recurrent cell", choices=CELLS)
    units: int = option(19, "neurons in the cell (the NCP wiring's total for ltc/cfc)", low=1)
    cell_dt: float | None = option(
        None, "the cell's ODE time per control step; none: the environment's dt (physical seconds)", low=0.0,
        open_low=True,
    )  # fmt: skip
    prior: str | None = option(
        None, "what the network commands: the action itself (none), joint accelerations (accel), joint "
        "velocities (velocity) or a task-space velocity resolved through the model's Jacobian (task); u_ref by "
        "inverse dynamics", choices=PRIORS,
    )  # fmt: skip
    prior_bound: float | None = option(None, "with a prior: the bound on the commanded quantity, the same for "
                                       "every joint (task prior: on the resolved joint velocities)", low=0.0,
                                       open_low=True)  # fmt: skip
    prior_gain: float = option(15.0, "velocity prior: a = gain (v - q'), 1/s", low=0.0, open_low=True)
    task_bound: float = option(1.0, "task prior: bound on the task velocity, m/s", low=0.0, open_low=True)
    goal_gain: float = option(
        0.0, "task prior: the network's command is a residual on min(K |e|, goal_speed) e/|e| towards the goal "
        "offset e the environment declares (ArmReach: target - end effector), 1/s; 0: off", low=0.0,
    )  # fmt: skip
    goal_speed: float = option(0.6, "goal_gain's speed cap, m/s", low=0.0, open_low=True)
    skip: bool = option(False, "a linear map from the encoded observation to the outputs, beside the cell",
                        experimental=True)  # fmt: skip
    safety: str = option("barrier", "the safety layer while training and in the saved policy", choices=SAFETY_MODES)
    gain_groups: list[str] | None = option(
        None, "barrier groups (a name's leading word, e.g. obstacle, joint) whose class-K gains are learned; "
        "default: all. The others keep the environment's default gains",
    )  # fmt: skip
    seed: int = option(0, "the run's seed (data, initialisation, evaluation order)", low=0)
    eval_episodes: int = option(20, "episodes per evaluation", low=1)
    workers: int = option(2, "processes collecting or evaluating episodes; 0: in this process", low=0)
    out: str = option("runs/train", "run folder (resumed if it holds last.pt)")
    env_kwargs: dict = option({}, "keyword arguments of the environment, e.g. obs_noise=0.05 disturbance=0.5")

    def __post_init__(self) -> None:
        validate(self)
        if self.gain_groups is not None:
            self.gain_groups = list(self.gain_groups)
        if self.prior is not None and self.prior_bound is None:
            raise ValueError(f"prior_bound is required with prior {self.prior!r} (the command's bound), got None")


def learned_groups(cfg: RunOptions, names: list[str]) -> list[str]:
    """The gain groups the policy learns: those of the barrier ``names``, or ``cfg.gain_groups`` if set
    (each must be one of them)."""
    groups = sorted({gain_group(n) for n in names})
    if cfg.gain_groups is None:
        return groups
    unknown = sorted(set(cfg.gain_groups) - set(groups))
    if unknown:
        raise ValueError(f"gain_groups {unknown} are not barrier groups of {cfg.env_id}; it has {groups}")
    return sorted(set(cfg.gain_groups))


def policy_config(cfg: RunOptions, env: gym.Env, names: list[str]) -> Any:
    """The :class:`~safeliquid.policies.PolicyConfig` of ``cfg`` on ``env``, learning the gains of the groups of
    the barrier ``names`` (the scenes' constraint names seen so far)."""
    base = env.unwrapped
    m = env.action_space.shape[0]
    prior = cfg.prior
    if prior is not None:
        if getattr(base, "model", None) is None:
            env.reset(seed=cfg.seed)  # the model is built with the scene
        if base.model.state_dim != 2 * m:
            raise ValueError(
                f"prior={prior!r} needs a fully actuated second-order model (state [q, q'] with {m} + {m} "
                f"entries); {cfg.env_id}'s model has state {base.model.state_dim} and {m} actions"
            )
        if prior == "task" and not base.model.task_dim:
            raise ValueError(f"prior='task' needs a model with a task space; {cfg.env_id}'s model has none")
    scan = (4, base.n_rays) if hasattr(base, "n_rays") else None
    return PolicyConfig(
        env_id=cfg.env_id,
        obs_dim=env.observation_space.shape[0],
        act_dim=m,
        action_bound=[float(b) for b in env.action_space.high],
        dt=float(base.dt),
        gain_groups=learned_groups(cfg, names),
        cell=cfg.cell,
        units=cfg.units,
        cell_dt=cfg.cell_dt,
        prior=prior,
        prior_bound=None if prior is None or cfg.prior_bound is None else [cfg.prior_bound] * m,
        prior_gain=cfg.prior_gain,
        task_dim=base.model.task_dim if prior == "task" else 0,
        task_bound=cfg.task_bound,
        skip=cfg.skip,
        goal_gain=cfg.goal_gain,
        goal_speed=cfg.goal_speed,
        goal_obs=getattr(base, "goal_offset_obs", None) if cfg.goal_gain > 0 else None,
        safety=cfg.safety,
        scan=scan,
        seed=cfg.seed,
    )
