"""Demonstrations: expert-labelled episodes with the gain-free HOCBF pieces the constraint layer needs.

An :class:`Episode` stores, per step, the observation, the expert's (filtered)
action and the scene's HOCBF terms (:meth:`ConstraintSet.terms`), so training
can run the BarrierNet QP on any batch of episodes without the simulator. The
driver is the expert, or, in DAgger rounds, the learner (the expert only labels).
Collection runs in worker processes, one environment each, seeded per episode.
"""

from __future__ import annotations

import ctypes
import multiprocessing as mp
import os
import signal
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch

import safeliquid.envs  # noqa: F401 - registers the environments (also in a spawned worker)
from safeliquid.checkpoint import CheckpointError, atomic_save, read
from safeliquid.envs import make_env
from safeliquid.envs.experts import make_expert
from safeliquid.policies import LiquidBarrierPolicy, PolicyConfig, gain_group
from safeliquid.policies.priors import model_terms
from safeliquid.policies.scene import scene_rows


@dataclass
class Episode:
    """One demonstration. ``obs (T, o)``, ``expert (T, m)`` float32; ``A (T, K, m)``, ``L (T, K, R+1)``
    float64; ``degree (K,)``, ``default (K, R)``; ``names`` of the K barriers; ``seed``; ``success``/``cost``
    of the driven episode; the model's ``f (T, n)`` and ``g (T, n, m)`` along it (float64; ``None`` in
    files written before they were recorded) and, for models with a task space, its Jacobian
    ``J (T, k, m)`` (:meth:`~safeliquid.safety.ControlAffine.task_jacobian`; else ``None``)."""

    obs: np.ndarray
    expert: np.ndarray
    A: np.ndarray
    L: np.ndarray
    degree: np.ndarray
    default: np.ndarray
    names: list[str]
    seed: int
    success: bool
    cost: float
    f: np.ndarray | None = None
    g: np.ndarray | None = None
    J: np.ndarray | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: (torch.from_numpy(v) if isinstance(v, np.ndarray) else v) for k, v in self.__dict__.items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Episode:
        return cls(**{k: (v.numpy() if torch.is_tensor(v) else v) for k, v in d.items()})


def collect_episode(env: gym.Env, expert: Any, seed: int, learner: Any = None, beta: float = 1.0,
                    max_degree: int = 2) -> Episode:  # fmt: skip
    """Run one seeded episode. Each step the expert labels the state; the expert drives with probability
    ``beta`` (seeded), otherwise ``learner`` (a policy with ``reset``/``act``) drives."""
    obs, _ = env.reset(seed=seed)
    expert.reset(env)
    if learner is not None:
        learner.reset()
    rng = np.random.default_rng(seed + 7919)
    base = env.unwrapped
    names = list(base.constraints.names)
    rows_out: dict[str, list] = {"obs": [], "expert": [], "A": [], "L": [], "f": [], "g": [], "J": []}
    done, cost, info = False, 0.0, {}
    while not done:
        x = torch.as_tensor(base.safety_state(), dtype=torch.float64).unsqueeze(0)
        rows = scene_rows(base.constraints, x, [], max_degree)
        label = expert(env)
        action = label
        if learner is not None:
            learned = learner.act(obs, base.safety_state(), base.constraints)
            if rng.random() >= beta:
                action = learned
        rows_out["obs"].append(obs)
        rows_out["expert"].append(label)
        rows_out["A"].append(rows["A"][0].numpy())
        rows_out["L"].append(rows["L"][0].numpy())
        terms = model_terms(base.model, x, "task" if base.model.task_dim else None)
        for key, value in zip("fgJ"[: len(terms)], terms, strict=True):
            rows_out[key].append(value[0].numpy())
        obs, _, terminated, truncated, info = env.step(action)
        cost += info["cost"]
        done = terminated or truncated
    return Episode(
        obs=np.asarray(rows_out["obs"], np.float32),
        expert=np.asarray(rows_out["expert"], np.float32),
        A=np.asarray(rows_out["A"]),
        L=np.asarray(rows_out["L"]),
        degree=rows["degree"][0].numpy(),
        default=rows["default"][0].numpy(),
        names=names,
        seed=seed,
        success=bool(info.get("is_success", False)),
        cost=float(cost),
        f=np.asarray(rows_out["f"]),
        g=np.asarray(rows_out["g"]),
        J=np.asarray(rows_out["J"]) if rows_out["J"] else None,
    )


def _worker(env_id: str, env_kwargs: dict, seeds: list[int], learner_blob: Any, beta: float) -> list[dict]:
    torch.set_num_threads(1)
    learner = None
    if learner_blob is not None:
        learner = LiquidBarrierPolicy(PolicyConfig(**learner_blob[0]))
        learner.load_state_dict(learner_blob[1])
        learner.eval()
    env, expert = make_env(env_id, env_kwargs), make_expert(env_id)
    out = [collect_episode(env, expert, s, learner, beta).to_dict() for s in seeds]
    env.close()
    return out


def die_with_parent(parent: int) -> None:
    """In a worker process of ``parent`` (its pid): end (SIGTERM) when the parent dies, however it dies (Linux's
    ``PR_SET_PDEATHSIG``), so that a killed ``train`` leaves no collection workers behind. Elsewhere a no-op."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG = 1
    if os.getppid() != parent:  # the parent died before the call above: nobody is waiting for this worker
        os._exit(1)


def collect(env_id: str, seeds: list[int], workers: int = 2, learner: Any = None, beta: float = 1.0,
            env_kwargs: dict | None = None, progress: Any = None) -> list[Episode]:  # fmt: skip
    """Expert-labelled episodes for ``seeds`` across ``workers`` processes (``workers=0``: in this process).

    ``learner``: a policy driving with probability ``1 - beta`` (DAgger). ``progress``: a tqdm bar to advance.
    """
    env_kwargs = env_kwargs or {}
    blob = None if learner is None else (learner.config.to_dict(), learner.state_dict())
    if workers <= 0:
        chunks = [[s] for s in seeds]
        results = []
        for chunk in chunks:
            results.append(_worker(env_id, env_kwargs, chunk, blob, beta))
            if progress is not None:
                progress.update(len(chunk))
    else:
        chunks = [list(seeds[i : i + 4]) for i in range(0, len(seeds), 4)]
        with ProcessPoolExecutor(
            workers, mp_context=mp.get_context("spawn"), initializer=die_with_parent, initargs=(os.getpid(),)
        ) as pool:
            futures = [pool.submit(_worker, env_id, env_kwargs, c, blob, beta) for c in chunks]
            results = []
            for fut, chunk in zip(futures, chunks, strict=True):
                results.append(fut.result())
                if progress is not None:
                    progress.update(len(chunk))
    return [Episode.from_dict(d) for chunk in results for d in chunk]


def save_episodes(episodes: list[Episode], path: str, meta: dict | None = None) -> None:
    """Write demonstrations to one file (atomically)."""
    atomic_save({"format": "safeliquid-demos", "meta": meta or {}, "episodes": [e.to_dict() for e in episodes]}, path)


def load_episodes(path: str) -> tuple[list[Episode], dict]:
    """Read demonstrations written by :func:`save_episodes` (raises naming the file if unusable)."""
    obj = read(path, "demonstrations")
    if obj.get("format") != "safeliquid-demos":
        raise CheckpointError(f"demonstrations {path} are not a safeliquid demo file (format {obj.get('format')!r})")
    return [Episode.from_dict(d) for d in obj["episodes"]], obj.get("meta", {})


def make_batch(episodes: list[Episode], groups: list[str]) -> dict[str, torch.Tensor]:
    """Pad episodes to one batch: ``obs (B, T, o)``, ``expert (B, T, m)``, ``step_mask (B, T)``, the
    rows of :meth:`LiquidBarrierPolicy.project` flattened to ``(B*T, ...)`` (K padded, ``mask`` marks real rows)
    and, when every episode has them, ``dyn``: the model's ``f (B, T, n)`` and ``g (B, T, n, m)``, followed
    by its task Jacobian ``J (B, T, k, m)`` when every episode has that too."""
    B, T = len(episodes), max(len(e.obs) for e in episodes)
    K = max(len(e.names) for e in episodes)
    o, m = episodes[0].obs.shape[1], episodes[0].expert.shape[1]
    R = episodes[0].default.shape[-1] if K else 2
    obs = torch.zeros(B, T, o)
    expert = torch.zeros(B, T, m)
    step_mask = torch.zeros(B, T, dtype=torch.bool)
    A = torch.zeros(B, T, K, m, dtype=torch.float64)
    L = torch.zeros(B, T, K, R + 1, dtype=torch.float64)
    degree = torch.zeros(B, T, K, dtype=torch.long)
    default = torch.ones(B, T, K, R, dtype=torch.float64)
    group = torch.full((B, T, K), -1, dtype=torch.long)
    mask = torch.zeros(B, T, K, dtype=torch.bool)
    for i, e in enumerate(episodes):
        t, k = len(e.obs), len(e.names)
        obs[i, :t] = torch.from_numpy(e.obs)
        expert[i, :t] = torch.from_numpy(e.expert)
        step_mask[i, :t] = True
        if k:
            A[i, :t, :k] = torch.from_numpy(e.A)
            L[i, :t, :k] = torch.from_numpy(e.L)
            degree[i, :, :k] = torch.from_numpy(e.degree)
            default[i, :, :k] = torch.from_numpy(e.default)
            idx = [groups.index(gain_group(n)) if gain_group(n) in groups else -1 for n in e.names]
            group[i, :, :k] = torch.tensor(idx)
            mask[i, :t, :k] = True
    rows = {"A": A, "L": L, "degree": degree, "default": default, "group": group, "mask": mask}
    rows = {key: v.reshape(B * T, *v.shape[2:]) for key, v in rows.items()}
    batch = {"obs": obs, "expert": expert, "step_mask": step_mask, "rows": rows}
    if all(e.f is not None and e.g is not None for e in episodes):
        n = episodes[0].f.shape[1]  # type: ignore[union-attr]
        f = torch.zeros(B, T, n, dtype=torch.float64)
        g = torch.zeros(B, T, n, m, dtype=torch.float64)
        g[:, :, n - m :] = torch.eye(m, dtype=torch.float64)  # padding steps: an invertible g_acc
        for i, e in enumerate(episodes):
            f[i, : len(e.obs)] = torch.from_numpy(e.f)
            g[i, : len(e.obs)] = torch.from_numpy(e.g)
        batch["dyn"] = (f, g)
        if all(e.J is not None for e in episodes):
            J = torch.zeros(B, T, *episodes[0].J.shape[1:], dtype=torch.float64)  # type: ignore[union-attr]
            for i, e in enumerate(episodes):
                J[i, : len(e.obs)] = torch.from_numpy(e.J)
            batch["dyn"] = (f, g, J)
    return batch
