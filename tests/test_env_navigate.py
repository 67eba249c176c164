"""Navigate: gymnasium's checker and determinism, model-vs-simulator, barriers vs PyBullet, safety in the loop."""

import gymnasium as gym
import numpy as np
import pybullet as p
import pytest
import safeliquid.envs  # noqa: F401 - registers the environments
import torch
from gymnasium.utils.env_checker import check_env

from safeliquid.safety import SafetyFilterWrapper

ENV_ID = "safeliquid/Navigate-v0"


@pytest.fixture
def env():
    e = gym.make(ENV_ID, render_mode="rgb_array").unwrapped
    yield e
    e.close()


@pytest.mark.filterwarnings("ignore:.*Box observation space m")  # ranges and velocities are unbounded
@pytest.mark.filterwarnings("ignore:.*we recommend using a symmetric and normalized space")  # forces in newtons
@pytest.mark.filterwarnings("ignore:render_mode='human' needs a display")  # the checker opens "human" headless
def test_gymnasium_env_checker_including_determinism_and_render(env):
    check_env(env)
    frame = env.render()
    assert frame.shape == (240, 320, 3) and frame.dtype == np.uint8 and frame.std() > 0


def test_same_seed_same_episode_across_resets_and_instances(env):
    other = gym.make(ENV_ID).unwrapped
    first, _ = env.reset(seed=11)
    actions = [np.array([3.0, -2.0], np.float32), np.array([-5.0, 1.0], np.float32)]
    traj = [env.step(a)[0] for a in actions]
    env.reset(seed=5)  # a different episode in between
    again, _ = env.reset(seed=11)
    np.testing.assert_array_equal(first, again)
    np.testing.assert_array_equal(traj[-1], [env.step(a)[0] for a in actions][-1])
    np.testing.assert_array_equal(other.reset(seed=11)[0], first)
    other.close()
    other.close()  # closing twice is harmless


def test_model_predicts_the_simulator(env):
    """One control step of the torch model against PyBullet, from states reached by random forces."""
    env.reset(seed=3)
    rng = np.random.default_rng(0)
    checked = 0
    for _ in range(60):
        u = rng.uniform(-5, 5, 2)
        x = env.safety_state()
        _, _, _, _, info = env.step(u.astype(np.float32))
        if info["contact"]:
            continue
        pred = env.model.step(torch.tensor(x).unsqueeze(0), torch.tensor(u, dtype=torch.float64).unsqueeze(0), env.dt)
        err = np.abs(pred[0].numpy() - env.safety_state())
        assert err[:2].max() < 2e-3 and err[2:].max() < 1e-5, err  # semi-implicit Euler at 200 Hz vs exact ZOH
        checked += 1
    assert checked > 40


def test_barriers_agree_with_pybullet_closest_points(env):
    for seed in range(5):
        env.reset(seed=seed)
        h = env.barrier_values()
        for i, body in enumerate(env._obstacle_ids):
            d_pb = min(c[8] for c in env.sim.call(p.getClosestPoints, env._robot, body, 100.0, linkIndexA=1))
            reach = env.obstacles[i, 2] + env.robot_radius + env.margin
            d_ours = np.sqrt(h[i] + reach**2) - env.obstacles[i, 2] - env.robot_radius
            assert abs(d_pb - d_ours) < 1e-4
        # The constraint set the safety layer uses gives the same values.
        torch.testing.assert_close(
            env.constraints.values(torch.tensor(env.safety_state()).unsqueeze(0))[0], torch.tensor(h)
        )


def _drive_at_nearest_obstacle(env, steps=120):
    costs = []
    env.reset(seed=2)
    for _ in range(steps):
        s = env.safety_state() if hasattr(env, "safety_state") else env.unwrapped.safety_state()
        obstacles = env.unwrapped.obstacles
        target = obstacles[np.argmin(np.linalg.norm(obstacles[:, :2] - s[:2], axis=1)), :2]
        push = 5.0 * (target - s[:2]) / np.linalg.norm(target - s[:2])
        _, _, term, _, info = env.step(push.astype(np.float32))
        costs.append(info["cost"])
        if term:
            break
    return costs


def test_pushing_into_an_obstacle_costs_and_the_filter_prevents_it():
    raw = gym.make(ENV_ID).unwrapped
    assert max(_drive_at_nearest_obstacle(raw)) == 1.0  # the collision is seen
    safe = SafetyFilterWrapper(gym.make(ENV_ID))  # builds its filter from each episode's constraints
    assert max(_drive_at_nearest_obstacle(safe)) == 0.0


def test_bad_actions_are_named_and_out_of_range_actions_clipped(env):
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"action must have shape \(2,\)"):
        env.step(np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="action contains NaN"):
        env.step(np.array([np.nan, 0.0], np.float32))
    _, _, _, _, info = env.step(np.array([50.0, 0.0], np.float32))
    assert info["action_clipped"]


def test_async_vector_env():
    envs = gym.make_vec(ENV_ID, num_envs=2, vectorization_mode="async")
    obs, _ = envs.reset(seed=[0, 1])
    assert obs.shape == (2, 20) and not np.array_equal(obs[0], obs[1])
    obs, _, _, _, info = envs.step(np.zeros((2, 2), np.float32))
    assert obs.shape == (2, 20) and info["cost"].shape == (2,)
    envs.close()
