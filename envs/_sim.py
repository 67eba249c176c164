"""One PyBullet client per environment instance (never the shared global client)."""

from __future__ import annotations

import os
import sys
import warnings
from typing import Any

import numpy as np
import pybullet as p
import pybullet_data


class BulletSim:
    """A PyBullet physics client: DIRECT by default, GUI for ``render_mode="human"``.

    Every call goes through ``self.call(fn, ...)`` with this client's id, so many
    environments in one process never share state. ``close()`` is idempotent. As pybullet's own
    ``BulletClient``, a client belongs to the process that connected it: a forked child (a ``fork`` start
    method's worker) gets a clear error instead of driving a copy of its parent's world, and never
    disconnects it.
    """

    def __init__(self, gui: bool = False, timestep: float = 1 / 200) -> None:
        if gui and sys.platform.startswith("linux") and not os.environ.get("DISPLAY"):
            # p.GUI blocks forever without an X server; say so and run headless instead.
            warnings.warn(
                "render_mode='human' needs a display but DISPLAY is not set; running headless (nothing is shown). "
                "Use render_mode='rgb_array' for frames.",
                stacklevel=3,
            )
            gui = False
        self.gui = gui
        self.client = -1
        self.pid = os.getpid()
        self.timestep = timestep
        self._connect()

    def _connect(self) -> None:
        self.pid = os.getpid()
        self.client = p.connect(p.GUI if self.gui else p.DIRECT)
        if self.client < 0:
            raise RuntimeError("could not start a PyBullet client")

    def call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        if self.pid != os.getpid():
            raise RuntimeError(
                f"this PyBullet client was connected by process {self.pid}, not this one ({os.getpid()}): "
                "make the environment inside the worker process (gymnasium's AsyncVectorEnv does)"
            )
        return fn(*args, physicsClientId=self.client, **kwargs)

    def set_timestep(self, timestep: float) -> None:
        """The physics step (s) from now on (and after every :meth:`reset`)."""
        self.timestep = float(timestep)
        self.call(p.setTimeStep, self.timestep)

    def reset(self, gravity: tuple[float, float, float] = (0.0, 0.0, -9.81)) -> None:
        """Empty the world (deterministic, unlike resetting joint states across episodes); after
        :meth:`close`, connect a new client first (gymnasium allows ``reset()`` after ``close()``)."""
        if self.client < 0:
            self._connect()
        self.call(p.resetSimulation)
        self.call(p.setAdditionalSearchPath, pybullet_data.getDataPath())
        self.call(p.setGravity, *gravity)
        self.call(p.setTimeStep, self.timestep)

    def render(
        self,
        target: tuple[float, float, float],
        distance: float,
        yaw: float = 0.0,
        pitch: float = -89.0,
        width: int = 320,
        height: int = 240,
    ) -> np.ndarray:
        """An RGB image ``(height, width, 3) uint8`` from PyBullet's TinyRenderer, looking at ``target``."""
        view = self.call(
            p.computeViewMatrixFromYawPitchRoll,
            cameraTargetPosition=list(target),
            distance=distance,
            yaw=yaw,
            pitch=pitch,
            roll=0.0,
            upAxisIndex=2,
        )
        proj = self.call(p.computeProjectionMatrixFOV, fov=60.0, aspect=width / height, nearVal=0.1, farVal=100.0)
        _, _, rgba, _, _ = self.call(
            p.getCameraImage, width, height, viewMatrix=view, projectionMatrix=proj, renderer=p.ER_TINY_RENDERER
        )
        return np.asarray(rgba, dtype=np.uint8).reshape(height, width, 4)[..., :3]

    def __del__(self) -> None:
        # A client left connected keeps its whole world in memory (~35 MB for the iiwa): models that make a
        # private client per episode (ArmReach's) would leak one per reset.
        try:
            self.close()
        except Exception:  # at interpreter shutdown pybullet may be torn down already
            pass

    def close(self) -> None:
        if self.client >= 0 and self.pid == os.getpid():
            try:
                p.disconnect(physicsClientId=self.client)
            finally:
                self.client = -1
