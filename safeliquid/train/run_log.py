"""What every training algorithm writes into its run folder, and how it picks its best checkpoint: the
closed-loop evaluation (:func:`evaluate_policy`), the selection order (:func:`selection_score`) and the log
(:class:`RunLog`: TensorBoard under ``tb/`` and ``progress.csv``, both cut back to the resumed step)."""

from __future__ import annotations

import csv
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from safeliquid.checkpoint import atomic_save, read
from safeliquid.envs import make_env
from safeliquid.policies import save_policy
from safeliquid.train.rollout import PolicyController, evaluate
from safeliquid.train.run_options import EVAL_SEED


def evaluate_policy(policy: Any, env_id: str, episodes: int, first_seed: int = EVAL_SEED,
                    env_kwargs: dict | None = None, per_episode: bool = False,
                    timed: bool = True) -> dict[str, Any]:  # fmt: skip
    """Closed-loop rollouts on seeds ``first_seed ...``: the aggregated metrics of :mod:`safeliquid.metrics`
    (with ``per_episode``, also each episode's, as :func:`~safeliquid.train.rollout.evaluate` gives them).
    ``timed``: the policy gets each sample's elapsed time (see :class:`~safeliquid.train.rollout.PolicyController`)."""
    env = make_env(env_id, env_kwargs)
    try:
        return evaluate(env, PolicyController(policy, timed), episodes, first_seed, per_episode=per_episode)
    finally:
        env.close()


def check_same_config(saved: dict[str, Any], cfg: Any, out: Path) -> None:
    """Refuse to resume the run in ``out`` whose ``last.pt`` holds the config ``saved`` with the dataclass ``cfg``
    if any option differs, naming them."""
    if saved != asdict(cfg):
        changed = sorted(k for k, v in asdict(cfg).items() if saved.get(k) != v)
        raise ValueError(f"{out}/last.pt was written with a different config (changed: {changed}); use a new --out")


def open_run(cfg: Any, algo: str, resume: bool) -> tuple[Path, dict[str, Any] | None]:
    """The run folder ``cfg.out`` (created) and its ``last.pt`` state if resuming (checked against ``cfg`` by
    :func:`check_same_config`), with ``config.json`` written as ``{"algo": algo, **cfg}``."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    state = read(out / "last.pt", "training state") if resume and (out / "last.pt").exists() else None
    if state is not None:
        check_same_config(state["train_config"], cfg, out)
    (out / "config.json").write_text(json.dumps({"algo": algo, **asdict(cfg)}, indent=2))
    return out, state


def save_checkpoints(
    policy: Any,
    out: Path,
    metrics: dict[str, Any],
    extra: dict[str, Any],
    best: list[float] | None,
    state: dict[str, Any],
) -> list[float]:
    """After an evaluation with ``metrics``: ``last_policy.pt`` (``extra`` and the metrics beside the weights),
    ``best.pt`` if the metrics beat ``best`` by :func:`selection_score`, then ``last.pt``: the training
    ``state`` with the new best under ``"best"`` (what a resumed run starts from). Returns the new best."""
    extra = {**extra, "metrics": plain(metrics)}
    save_policy(policy, out / "last_policy.pt", extra)
    if best is None or selection_score(metrics) < tuple(best):
        best = list(selection_score(metrics))
        save_policy(policy, out / "best.pt", extra)
    atomic_save({**state, "best": best}, out / "last.pt")
    return best


def selection_score(metrics: dict[str, Any]) -> tuple[float, float, float]:
    """Smaller is better: violating steps, then failed episodes, then return."""
    return (float(metrics["violating_steps"]), -float(metrics["success_rate"]), -float(metrics["EpRet"]))


def plain(metrics: dict[str, Any]) -> dict[str, Any]:
    """``metrics`` with its interval tuples as lists (a checkpoint's ``extra`` is read with weights_only)."""
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in metrics.items()}


class RunLog:
    """TensorBoard scalars under ``out/tb`` and the rows of ``out/progress.csv``, indexed by ``step_key`` (the
    algorithm's step: ``update`` or ``env_steps``). A resumed run (``resumed_at`` its step) keeps the rows up
    to that step; a fresh one starts both afresh."""

    def __init__(self, out: Path, step_key: str, resumed_at: int | None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.step_key = step_key
        self.writer = SummaryWriter(str(out / "tb"), purge_step=resumed_at or None)
        self.csv_path = out / "progress.csv"
        if resumed_at is None:
            self.csv_path.unlink(missing_ok=True)
        elif self.csv_path.exists():
            with open(self.csv_path) as fh:
                kept = [r for r in csv.DictReader(fh) if int(float(r[step_key])) <= resumed_at]
            _write_csv(self.csv_path, kept)

    def scalars(self, prefix: str, values: dict[str, float], step: int) -> None:
        for key, value in values.items():
            self.writer.add_scalar(f"{prefix}/{key}", value, step)

    def row(self, row: dict[str, Any]) -> None:
        """Append one row to ``progress.csv`` (new columns extend the header; a row without them leaves them
        empty)."""
        rows = []
        if self.csv_path.exists():
            with open(self.csv_path) as fh:
                rows = list(csv.DictReader(fh))
        rows.append(row)
        _write_csv(self.csv_path, rows)

    def close(self) -> None:
        self.writer.close()


def _write_csv(path: Path, rows: list[dict]) -> None:
    if not rows:
        path.unlink(missing_ok=True)
        return
    fields = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
