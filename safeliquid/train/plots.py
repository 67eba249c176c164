"""Figures of one rollout: a top view of the path among the obstacles, barrier values and intervention over time."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt
import numpy as np

from safeliquid.train.rollout import Trace


def plot_rollout(trace: Trace, env: Any, path: str | Path, title: str = "") -> Path:
    """Write a PNG: (left) the top view with obstacles and the path for Navigate, cart position and pole
    angle for CartPoleRail, joint positions for the arm; (middle, right) every barrier
    ``h(t)`` (>= 0 safe) and the intervention ``|u_safe - u_raw|``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    base = env.unwrapped
    states = np.asarray(trace.state)
    barrier = np.asarray(trace.barrier)
    t = np.arange(len(states)) * base.dt
    fig, (ax0, ax1, ax2) = plt.subplots(1, 3, figsize=(14, 4.2))
    if hasattr(base, "obstacles") and states.shape[1] == 4 and hasattr(base, "goal"):
        for cx, cy, r in base.obstacles:
            ax0.add_patch(plt.Circle((cx, cy), r, color="tab:red", alpha=0.6))
            ax0.add_patch(
                plt.Circle((cx, cy), r + base.robot_radius + base.margin, fill=False, ls="--", color="tab:red")
            )
        ax0.plot(states[:, 0], states[:, 1], color="tab:blue", lw=1.5, label="path")
        ax0.plot(*states[0, :2], "o", color="tab:blue", label="start")
        ax0.plot(*base.goal, "*", color="tab:green", ms=14, label="goal")
        ax0.set_aspect("equal")
        ax0.set_xlabel("x (m)"), ax0.set_ylabel("y (m)")
        ax0.set_title("top view (dashed: barrier boundary for the robot's centre)")
    elif hasattr(base, "rail"):
        ax0.plot(t, states[:, 0], label="cart x (m)")
        ax0.plot(t, np.angle(np.exp(1j * states[:, 1])), label="pole angle (rad, 0 up)")
        ax0.axhline(base.rail, ls="--", color="tab:red")
        ax0.axhline(-base.rail, ls="--", color="tab:red", label="rail limits")
        ax0.set_xlabel("t (s)")
        ax0.set_title("cart and pole")
    else:  # a manipulator: joint positions
        for j in range(states.shape[1] // 2):
            ax0.plot(t, states[:, j], lw=1, label=f"q{j + 1}")
        ax0.set_xlabel("t (s)")
        ax0.set_title("joint positions (rad)")
    ax0.legend(loc="best", fontsize=8)
    for k, name in enumerate(trace.names):
        ax1.plot(t, barrier[:, k], lw=1, label=name if len(trace.names) <= 8 else None)
    ax1.axhline(0.0, color="black", lw=1)
    ax1.set_xlabel("t (s)"), ax1.set_ylabel("h (>= 0 safe)")
    ax1.set_title(f"barrier values (min {barrier.min():.3g})")
    ax1.set_yscale("symlog", linthresh=1e-2)
    if len(trace.names) <= 8:
        ax1.legend(fontsize=7)
    ax2.plot(t[1:], trace.intervention, color="tab:purple")
    ax2.set_xlabel("t (s)"), ax2.set_ylabel("|u_safe - u_raw|")
    ax2.set_title("intervention of the safety layer")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def write_gif(frames: list[np.ndarray], path: str | Path, frame_s: float) -> Path:
    """Frames ``(H, W, 3) uint8`` to a looping GIF (``.mp4`` needs imageio-ffmpeg; GIF always works)."""
    import imageio.v2 as imageio

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".mp4":
        imageio.mimsave(path, frames, fps=max(1, round(1 / frame_s)))
    else:
        imageio.mimsave(path, frames, duration=1000 * frame_s, loop=0)
    return path
