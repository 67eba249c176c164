"""The options of the ``safeliquid`` commands other than ``train`` (whose options are
:class:`~safeliquid.train.imitation.TrainConfig`), each declared once with :func:`~safeliquid.options.option`:
the parser is generated from these classes and every value is checked when one is built."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from safeliquid.envs import check_env_id
from safeliquid.options import option, validate
from safeliquid.policies import SAFETY_MODES
from safeliquid.train.run_options import HELD_OUT_SEED

ENV_DEFAULT = "safeliquid/Navigate-v0"


def _nearest_existing(path: Path) -> Path:
    """``path`` or its nearest ancestor that exists (the folders a write would create start below it)."""
    return next(p for p in (path, *path.parents) if p.exists())


def writable_file(text: str) -> None:
    """A file can be written at ``text``: it is not a folder, and its folder exists or can be created. Checked
    without creating anything; the command creates the folder when it writes."""
    path = Path(text)
    if path.is_dir():
        raise ValueError(f"cannot write {text}: it is a folder")
    if path.exists():
        if not os.access(path, os.W_OK):
            raise ValueError(f"cannot write {text}: permission denied")
        return
    writable_folder(str(path.parent), text)


def writable_folder(text: str, target: str | None = None) -> None:
    """``text`` is a folder, or can be created as one, that files can be written into."""
    base = _nearest_existing(Path(text).absolute())
    if not base.is_dir():
        raise ValueError(f"cannot write {target or text}: {base} is a file")
    if not os.access(base, os.W_OK):
        raise ValueError(f"cannot write {target or text}: {base} is not writable")


@dataclass
class EnvOptions:
    """The environment and the first episode's seed."""

    env: str = option(ENV_DEFAULT, "environment id", check=check_env_id)
    seed: int = option(HELD_OUT_SEED, "first episode seed (held out: training evaluates on 1,000,000+)", low=0)

    def __post_init__(self) -> None:
        validate(self)


@dataclass
class ControllerOptions(EnvOptions):
    """Who drives (a policy, by default the shipped one, or the expert) and the environment's perturbations."""

    policy: str | None = option(None, "policy checkpoint; default: the shipped one for --env")
    expert: bool = option(False, "run the environment's expert instead of a policy")
    run_safety: str | None = option(
        None, "override the policy's safety mode at run time; default: the policy's own", choices=SAFETY_MODES
    )
    obs_noise: float = option(0.0, "observation noise std", low=0.0)
    disturbance: float = option(0.0, "external-force std (units of the env's disturbance_scale)", low=0.0)


@dataclass
class CollectOptions(EnvOptions):
    """``safeliquid collect``: expert demonstrations."""

    seed: int = option(0, "first episode seed", low=0)
    episodes: int = option(100, "episodes", low=1)
    workers: int = option(2, "worker processes; 0: in this process", low=0)
    out: str = option("runs/demos.pt", "output file", check=writable_file)


@dataclass
class EvalOptions(ControllerOptions):
    """``safeliquid eval``: seeded closed-loop evaluation."""

    episodes: int = option(50, "episodes", low=1)
    json: str | None = option(
        None, "write the metrics here (aggregate, and per episode under per_episode: seed, success, ...)",
        check=writable_file,
    )  # fmt: skip
    markdown: str | None = option(None, "write the table here", check=writable_file)


@dataclass
class RolloutOptions(ControllerOptions):
    """``safeliquid rollout``: one episode as a video and plots."""

    out: str = option("runs/rollout", "output folder", check=writable_folder)
    format: str = option("gif", "video format (mp4 needs imageio-ffmpeg)", choices=("gif", "mp4"))
    frame_every: int = option(2, "keep every n-th frame", low=1)


@dataclass
class DemoOptions(ControllerOptions):
    """``safeliquid demo``: the shipped policy with and without its barrier layer."""

    episodes: int = option(50, "episodes per configuration", low=1)
    out: str = option("runs/demo", "output folder", check=writable_folder)


@dataclass
class BenchOptions(EnvOptions):
    """``safeliquid bench``: a policy's control-step latency."""

    policy: str | None = option(None, "policy checkpoint; default: the shipped one for --env")
    steps: int = option(2000, "control steps to time (the first 20 are not)", low=21)


@dataclass
class ExplainOptions(EnvOptions):
    """``safeliquid explain``: neuron traces, saliency over the observation and per-neuron decision trees."""

    policy: str | None = option(None, "policy checkpoint; default: the shipped one for --env")
    episodes: int = option(3, "episodes to record (the trees fit on all their steps)", low=1)
    depth: int = option(3, "depth of each neuron's decision tree", low=1)
    out: str = option("runs/explain", "output folder", check=writable_folder)
