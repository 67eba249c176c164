"""A policy's configuration: everything needed to rebuild it, stored in its checkpoint; the safety modes
and the gain groups (a barrier name's leading word)."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

from safeliquid.options import check_types

SAFETY_MODES = ("barrier", "filter", "none")
PRIORS = (None, "accel", "velocity", "task")


def gain_group(name: str) -> str:
    """The gain group of a barrier: its name's leading word (``obstacle3`` -> ``obstacle``)."""
    match = re.match(r"[A-Za-z_]+", name)
    return match.group(0) if match else name


@dataclass
class PolicyConfig:
    """Everything needed to rebuild a policy; stored in its checkpoint.

    ``scan``: ``(start, length)`` of a range scan inside the observation, encoded by a
    circular convolution, or ``None``. ``gain_groups``: barrier groups with learned gains.
    ``prior``: for fully actuated second-order models (state ``[q, q']``), the network's bounded command
    (``|cmd| <= prior_bound``) is a joint acceleration ``a = cmd`` (``"accel"``) or a joint velocity,
    ``a = prior_gain (cmd - q')`` (``"velocity"``), and ``u_ref`` is the inverse dynamics of ``a``
    through the model (``M(q) a + c(q, q')`` for an arm). ``"task"``: the network commands a task-space
    velocity ``v`` (``|v| <= task_bound``, ``task_dim`` entries, e.g. an end effector's, m/s), resolved as
    ``q'* = clip(J+ v, +-prior_bound)`` (damped least squares, :func:`joint_velocity`; motion in the
    Jacobian's null space is damped) and tracked as the velocity prior. ``None``: the network outputs ``u_ref``.
    ``cell_dt``: the cell's ODE time per control step (``None``: ``dt``, physical seconds). A
    continuous-time cell initialised with time constants of ~0.1-1 time units lags a 50 Hz loop by
    many steps when it integrates physical time; ``cell_dt=1`` is ncps' convention of one time unit per step.
    ``skip``: add a linear map of the encoded observation to the outputs (initialised to zero), a direct
    sensory-to-motor path: the cell carries what needs memory (the phase of a manoeuvre), the map what
    needs none (a command proportional to an observed offset), which a small NCP's saturating neurons
    reproduce poorly. (On ArmReach it did not raise success; docs/training.md has the run.)
    ``goal_gain`` > 0 (prior ``"task"`` only): the network's command is a residual on a goal-directed
    one, ``v = task_bound tanh(raw) + min(goal_gain |e|, goal_speed) e / |e|``, with ``e`` the task-space
    offset to the goal that the observation holds at ``goal_obs:goal_obs + task_dim`` (a residual policy
    on a saturated P controller). A network's velocity error near the goal then has to cancel the P
    term before the arm can stall there, instead of only the small command a P term gives near its goal.
    """

    env_id: str
    obs_dim: int
    act_dim: int
    action_bound: list[float]
    dt: float
    gain_groups: list[str]
    max_degree: int = 2
    cell: str = "ltc"
    units: int = 19
    safety: str = "barrier"
    scan: tuple[int, int] | None = None
    encoder_dim: int = 24
    gain_range: float = 4.0
    seed: int = 0
    obs_mean: list[float] = field(default_factory=list)
    obs_std: list[float] = field(default_factory=list)
    cell_dt: float | None = None
    prior: str | None = None
    prior_bound: list[float] | None = None
    prior_gain: float = 15.0
    task_dim: int = 0
    task_bound: float = 1.0
    skip: bool = False
    goal_gain: float = 0.0
    goal_speed: float = 0.6
    goal_obs: int | None = None

    def __post_init__(self) -> None:
        check_types(self)
        if self.safety not in SAFETY_MODES:
            raise ValueError(f"safety must be one of {SAFETY_MODES}, got {self.safety!r}")
        if len(self.action_bound) != self.act_dim:
            raise ValueError(f"action_bound needs {self.act_dim} entries, got {len(self.action_bound)}")
        if self.scan is not None:
            self.scan = (int(self.scan[0]), int(self.scan[1]))
        if self.prior not in PRIORS:
            raise ValueError(f"prior must be one of {PRIORS}, got {self.prior!r}")
        if self.prior is not None and (
            self.prior_bound is None
            or len(self.prior_bound) != self.act_dim
            or not all(b > 0 for b in self.prior_bound)
            or not self.prior_gain > 0
        ):
            raise ValueError(
                f"prior={self.prior!r} needs prior_bound with {self.act_dim} positive entries and prior_gain > 0, "
                f"got {self.prior_bound} and {self.prior_gain}"
            )
        if self.prior == "task" and not (self.task_dim > 0 and self.task_bound > 0):
            raise ValueError(
                f"prior='task' needs task_dim > 0 (the model's task space) and task_bound > 0, "
                f"got {self.task_dim} and {self.task_bound}"
            )
        if self.goal_gain < 0 or (self.goal_gain > 0 and not self._goal_ok()):
            raise ValueError(
                f"goal_gain > 0 needs prior='task', goal_speed > 0 and goal_obs with 0 <= goal_obs <= "
                f"obs_dim - task_dim = {self.obs_dim - self.task_dim}; got goal_gain {self.goal_gain}, prior "
                f"{self.prior!r}, goal_speed {self.goal_speed}, goal_obs {self.goal_obs}"
            )
        if self.cell_dt is not None and not self.cell_dt > 0:
            raise ValueError(f"cell_dt must be > 0 (ODE time per control step) or None, got {self.cell_dt}")

    def _goal_ok(self) -> bool:
        return (
            self.prior == "task"
            and self.goal_speed > 0
            and self.goal_obs is not None
            and 0 <= self.goal_obs <= self.obs_dim - self.task_dim
        )

    @property
    def cell_time(self) -> float:
        """ODE time the cell integrates per control step."""
        return self.dt if self.cell_dt is None else float(self.cell_dt)

    @property
    def n_command(self) -> int:
        """The network's command outputs (before the gains): ``task_dim`` with the task prior, else ``act_dim``."""
        return self.task_dim if self.prior == "task" else self.act_dim

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
