"""Navigate expert: A* on a grid of the inflated obstacles, a PD tracker on a look-ahead point, the CBF filter."""

from __future__ import annotations

import heapq

import numpy as np

from safeliquid.envs.experts._common import FilteredExpert
from safeliquid.envs.navigate import NavigateEnv


def plan(start: np.ndarray, goal: np.ndarray, obstacles: np.ndarray, inflate: float, cell: float = 0.1) -> np.ndarray:
    """Shortest 8-connected grid path from ``start`` to ``goal`` (both ``(2,)``) avoiding discs
    ``obstacles (K, 3)`` grown by ``inflate``; returns waypoints ``(P, 2)`` ending at ``goal``."""
    lo = np.minimum(np.minimum(start, goal), obstacles[:, :2].min(0)) - 1.0
    hi = np.maximum(np.maximum(start, goal), obstacles[:, :2].max(0)) + 1.0
    shape = tuple(np.ceil((hi - lo) / cell).astype(int) + 1)
    xs = lo[0] + cell * np.arange(shape[0])
    ys = lo[1] + cell * np.arange(shape[1])
    gx, gy = np.meshgrid(xs, ys, indexing="ij")
    free = np.ones(shape, bool)
    for cx, cy, r in obstacles:
        free &= (gx - cx) ** 2 + (gy - cy) ** 2 > (r + inflate) ** 2
    s = tuple(np.round((start - lo) / cell).astype(int))
    t = tuple(np.round((goal - lo) / cell).astype(int))
    free[s] = free[t] = True
    dist = {s: 0.0}
    parent: dict[tuple[int, int], tuple[int, int]] = {}
    queue = [(float(np.hypot(*np.subtract(t, s))), s)]
    steps = [(dx, dy, float(np.hypot(dx, dy))) for dx in (-1, 0, 1) for dy in (-1, 0, 1) if dx or dy]
    while queue:
        _, node = heapq.heappop(queue)
        if node == t:
            break
        for dx, dy, w in steps:
            nb = (node[0] + dx, node[1] + dy)
            if not (0 <= nb[0] < shape[0] and 0 <= nb[1] < shape[1]) or not free[nb]:
                continue
            d = dist[node] + w
            if d < dist.get(nb, np.inf):
                dist[nb], parent[nb] = d, node
                heapq.heappush(queue, (d + float(np.hypot(t[0] - nb[0], t[1] - nb[1])), nb))
    if t not in dist:
        return goal[None].copy()  # no path on the grid: head for the goal and let the filter keep it safe
    path = [t]
    while path[-1] != s:
        path.append(parent[path[-1]])
    points = lo + cell * np.array(path[::-1], dtype=float)
    points[-1] = goal
    return points


class NavigateExpert(FilteredExpert):
    """Plan (obstacles grown by the robot radius, margin and ``clearance``), then
    ``u = k_p (w - p) - k_d v`` towards the path point ``lookahead`` metres ahead.

    The plan is redone from the current position whenever the robot is more than
    ``replan`` metres off it, which happens when someone else drives (DAgger): the
    labels then lead to the goal from where the learner is, not back to the old path.
    """

    def __init__(
        self,
        clearance: float = 0.15,
        lookahead: float = 0.6,
        kp: float = 6.0,
        kd: float = 4.0,
        replan: float = 0.25,
    ) -> None:
        super().__init__()
        self.clearance, self.lookahead, self.kp, self.kd, self.replan = clearance, lookahead, kp, kd, replan
        self.path = np.zeros((1, 2))

    def reset(self, env: NavigateEnv) -> None:
        super().reset(env)
        self._plan(env.unwrapped, env.unwrapped.safety_state()[:2])

    def _plan(self, env: NavigateEnv, start: np.ndarray) -> None:
        # Grow the obstacles by less than the full clearance if the robot is already closer, so that
        # the start is not walled in (the barrier itself still keeps robot radius + margin).
        gap = float(np.min(np.linalg.norm(env.obstacles[:, :2] - start, axis=1) - env.obstacles[:, 2]))
        floor = env.robot_radius + env.margin
        inflate = max(floor, min(floor + self.clearance, gap - 0.05))
        self.path = plan(start, env.goal, env.obstacles, inflate)

    def reference(self, env: NavigateEnv, state: np.ndarray) -> np.ndarray:
        p, v = state[:2], state[2:]
        if np.min(np.linalg.norm(self.path - p, axis=1)) > self.replan:
            self._plan(env.unwrapped, p)
        nearest = int(np.argmin(np.linalg.norm(self.path - p, axis=1)))
        ahead = self.path[nearest:]
        along = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(ahead, axis=0), axis=1))])
        waypoint = ahead[min(int(np.searchsorted(along, self.lookahead)), len(ahead) - 1)]
        return self.kp * (waypoint - p) - self.kd * v
