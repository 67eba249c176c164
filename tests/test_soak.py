"""Many resets of every environment: the PyBullet clients and the memory stay flat, and close() frees all."""

from __future__ import annotations

import gc
import os
import sys
from pathlib import Path

import gymnasium as gym
import pybullet as p
import pytest

import safeliquid.envs  # noqa: F401 - registers the environments
from safeliquid.envs import ENV_IDS

RESETS = {"safeliquid/Navigate-v0": 60, "safeliquid/CartPoleRail-v0": 60, "safeliquid/ArmReach-v0": 40}


def connected() -> int:
    """PyBullet clients connected in this process (ids are small integers, reused after a disconnect)."""
    return sum(p.getConnectionInfo(physicsClientId=i)["isConnected"] for i in range(64))


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
@pytest.mark.parametrize("env_id", ENV_IDS)
def test_resets_keep_clients_and_memory_flat(env_id):
    before = connected()
    env = gym.make(env_id)
    for seed in range(5):  # warm: first builds, caches, compiled kernels
        env.reset(seed=seed)
        env.step(env.action_space.sample())
    gc.collect()
    start = rss_mb()
    for seed in range(RESETS[env_id]):
        env.reset(seed=100 + seed)
        env.step(env.action_space.sample())
        assert connected() == before + 1, f"reset {seed}: {connected() - before} clients connected"
    gc.disable()  # a leak that only the cyclic collector would free must show here
    try:
        for seed in range(10):
            env.reset(seed=1000 + seed)
        assert connected() == before + 1
    finally:
        gc.enable()
    gc.collect()
    grown = rss_mb() - start
    assert grown < 40, f"RSS grew {grown:.0f} MB over {RESETS[env_id] + 10} resets"
    env.close()
    assert connected() == before, "env.close() left a client connected"
    env.reset(seed=0)  # gymnasium allows reset after close: one new client, closed again
    assert connected() == before + 1
    env.close()
    assert connected() == before


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_cannot_drive_its_parents_client():
    env = gym.make("safeliquid/Navigate-v0")
    env.reset(seed=0)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report what a step does, then leave without running any cleanup
        try:
            env.step(env.action_space.sample())
            message = b"stepped"
        except RuntimeError as err:
            message = str(err).encode()[:200]
        os.write(write, message)
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    message = os.read(read, 200).decode()
    os.close(read)
    assert "was connected by process" in message, message
    env.step(env.action_space.sample())  # the parent's client is untouched
    assert connected() >= 1
    env.close()
