"""Training: demonstrations (:mod:`.data`), imitation with DAgger through the QP (:mod:`.imitation`),
closed-loop rollouts (:mod:`.rollout`)."""

from safeliquid.train.data import Episode, collect, load_episodes, save_episodes
from safeliquid.train.imitation import TrainConfig, train
from safeliquid.train.rollout import ExpertController, PolicyController, run_episode
from safeliquid.train.run_log import evaluate_policy

__all__ = [
    "Episode",
    "ExpertController",
    "PolicyController",
    "TrainConfig",
    "collect",
    "evaluate_policy",
    "load_episodes",
    "run_episode",
    "save_episodes",
    "train",
]
