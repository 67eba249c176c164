"""Acting in vector environments through the safety layer, as the reinforcement-learning algorithms do
(:mod:`.ppo`, :mod:`.sac`): the vector environment, the map from the network's raw outputs to every
environment's executed action (one QP call for all), observation normalisation, the values a finished episode
reports, and the run's initial policy (fresh or a checkpoint to fine-tune)."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor

import safeliquid.envs  # noqa: F401 - registers the environments
from safeliquid.envs import make_env
from safeliquid.policies import LiquidBarrierPolicy, load_policy
from safeliquid.policies.priors import model_terms
from safeliquid.policies.scene import defaults_and_groups, flat_gains
from safeliquid.qp import MAX_ITER
from safeliquid.safety import BarrierLayer
from safeliquid.safety.layer import project_many
from safeliquid.train.run_options import RunOptions, policy_config

TRAIN_SEED = 300_000  # the training episodes' seeds (a vector reset seeds env i with seed + i)


def vector_env(cfg: RunOptions, n: int, autoreset: gym.vector.AutoresetMode) -> gym.vector.SyncVectorEnv:
    """``n`` environments of ``cfg`` (its ``env_kwargs``) stepped together with the ``autoreset`` mode."""
    fns = [lambda: make_env(cfg.env_id, cfg.env_kwargs) for _ in range(n)]
    return gym.vector.SyncVectorEnv(fns, autoreset_mode=autoreset)


class RunningNorm:
    """Running mean and variance of observations ``(N, d)`` (Chan et al.'s parallel update)."""

    def __init__(self, dim: int) -> None:
        self.mean, self.var, self.count = np.zeros(dim), np.ones(dim), 1e-4

    def update(self, x: np.ndarray) -> None:
        mean, var, n = x.mean(0), x.var(0), x.shape[0]
        delta, total = mean - self.mean, self.count + n
        self.mean = self.mean + delta * n / total
        self.var = (self.var * self.count + var * n + delta**2 * self.count * n / total) / total
        self.count = total

    def state(self) -> dict[str, Any]:
        return {"mean": np.atleast_1d(self.mean).tolist(), "var": np.atleast_1d(self.var).tolist(), "count": self.count}

    def load(self, state: dict[str, Any]) -> None:
        self.mean, self.var, self.count = np.array(state["mean"]), np.array(state["var"]), float(state["count"])


class ActionMap:
    """PPO's action ``a (N, outputs)`` -> the executed action of each of ``N`` environments: the policy's
    :meth:`~LiquidBarrierPolicy.outputs` (squashing, prior) and then its safety mode (``none``: the bounds;
    ``filter``: the layer with the default gains; ``barrier``: the layer with the gains in ``a``), one QP call
    for all. Each environment's layer and gain data are rebuilt when its scene changes."""

    def __init__(self, policy: LiquidBarrierPolicy, n_envs: int) -> None:
        self.policy = policy
        self._for: list[Any] = [None] * n_envs
        self._layers: list[BarrierLayer | None] = [None] * n_envs
        self._scenes: list[Any] = [None] * n_envs
        self.bound_norm = float(np.linalg.norm(policy.bound.double().numpy()))  # |u| at the box's corner

    def _scene(self, i: int, constraints: Any) -> tuple[BarrierLayer, Any]:
        if self._for[i] is not constraints:
            c = self.policy.config
            self._layers[i] = BarrierLayer(constraints, dt=c.dt)
            self._scenes[i] = defaults_and_groups(constraints, c.gain_groups, c.max_degree)
            self._for[i] = constraints
        layer = self._layers[i]
        assert layer is not None
        return layer, self._scenes[i]

    def __call__(self, a: Tensor, obs: Tensor, subs: list[Any]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """``a (N, outputs)``, raw ``obs (N, obs_dim)`` and the sub-environments (``unwrapped``) -> ``u (N, m)``
        and per-environment ``intervention``, ``slack``, ``fallback``, ``failed``."""
        policy, c = self.policy, self.policy.config
        x = np.stack([s.safety_state() for s in subs])
        dyn = None
        if c.prior is not None:
            xt = torch.from_numpy(x)
            per_env = [model_terms(s.constraints.model, xt[i : i + 1], c.prior) for i, s in enumerate(subs)]
            dyn = tuple(torch.cat(parts) for parts in zip(*per_env, strict=True))
        with torch.no_grad():
            u_ref, mult = policy.outputs(a.to(torch.float32), dyn, policy.goal_command(obs))
        u_ref_np = u_ref.double().numpy()
        n = u_ref_np.shape[0]
        zero, false = np.zeros(n), np.zeros(n, dtype=bool)
        if policy.run_safety == "none":
            bound = policy.bound.double().numpy()
            u = np.clip(u_ref_np, -bound, bound)
            return u, {"intervention": np.linalg.norm(u - u_ref_np, axis=1), "slack": zero, "fallback": false,
                       "failed": false}  # fmt: skip
        scenes = [self._scene(i, s.constraints) for i, s in enumerate(subs)]
        gains = None
        if policy.run_safety == "barrier" and mult is not None:
            mult_np = mult.double().numpy()
            gains = [flat_gains(sub.constraints, scenes[i][1], mult_np[i]) for i, sub in enumerate(subs)]
        u, records = project_many([layer for layer, _ in scenes], x, u_ref_np, gains)
        return u, {
            "intervention": np.array([float(r.intervention[0]) for r in records]),
            "slack": np.array([float(r.slack.max()) if r.slack.size else 0.0 for r in records]),
            "fallback": np.array([bool(r.fallback[0]) for r in records]),
            "failed": np.array([bool(r.status[0] == MAX_ITER) for r in records]),
        }


def step_values(info: dict[str, Any], key: str, done: np.ndarray) -> np.ndarray:
    """``info[key]`` of a same-step-autoreset vector step, ``(N,)``: for an environment whose episode ended
    (``done``), the step's ``info`` is its reset's, so its value comes from ``info["final_info"]``; absent keys
    read 0."""
    values = np.asarray(info.get(key, np.zeros(done.shape)), dtype=np.float64).copy()
    final = info.get("final_info", {})
    if done.any() and key in final:
        has = done & np.asarray(final.get(f"_{key}", done), dtype=bool)
        values[has] = np.asarray(final[key], dtype=np.float64)[has]
    return values


NETWORK_OPTIONS = ("env_id", "cell", "units", "cell_dt", "prior", "prior_gain", "task_bound", "goal_gain", "goal_speed",
                   "skip")  # fmt: skip


def network_mismatch(cfg: RunOptions, config: Any) -> dict[str, Any]:
    """The options of ``cfg`` that build a network other than the one of the policy ``config``
    (:class:`~safeliquid.policies.PolicyConfig`), each with the checkpoint's value."""
    differ = {k: getattr(config, k) for k in NETWORK_OPTIONS if getattr(cfg, k) != getattr(config, k)}
    bound = None if cfg.prior_bound is None or cfg.prior is None else [cfg.prior_bound] * config.act_dim
    if bound != config.prior_bound:
        differ["prior_bound"] = config.prior_bound
    if cfg.gain_groups is not None and sorted(cfg.gain_groups) != sorted(config.gain_groups):
        differ["gain_groups"] = config.gain_groups
    return differ


def init_options(path: str) -> dict[str, Any]:
    """The network options of the policy checkpoint at ``path`` in :class:`RunOptions` terms (what ``train
    --algo ppo|sac --init PATH`` fills in where they are not given)."""
    config = load_policy(path).config
    values = {k: getattr(config, k) for k in NETWORK_OPTIONS}
    bounds = config.prior_bound
    if bounds is not None and len(set(bounds)) > 1:
        raise ValueError(f"init's policy has per-joint prior bounds {bounds}; the run takes one bound for all")
    values["prior_bound"] = None if bounds is None else bounds[0]
    values["gain_groups"] = list(config.gain_groups)
    return values


def initial_policy(cfg: RunOptions, init: str | None, vec: gym.vector.SyncVectorEnv) -> LiquidBarrierPolicy:
    """A fresh policy for ``cfg`` (gain groups from the first scenes' barriers), or the network of the checkpoint
    ``init`` (which must match ``cfg``'s network options)."""
    if init is not None:
        policy = load_policy(init)
        differ = network_mismatch(cfg, policy.config)
        if differ:
            raise ValueError(f"init's policy differs from this config in {differ}; set them as the checkpoint has them")
        if cfg.safety == "barrier" and not policy.n_gain:
            raise ValueError(f"init's policy was trained with safety {policy.config.safety!r}: it has no gain outputs "
                             "for safety 'barrier'")  # fmt: skip
        policy.config.safety = policy.run_safety = cfg.safety
        return policy
    sub = vec.envs[0]
    names = list(sub.unwrapped.constraints.names)
    return LiquidBarrierPolicy(policy_config(cfg, sub, names))
