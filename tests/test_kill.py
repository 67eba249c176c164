"""A killed collection (SIGKILL, as a session's end or an OOM kill does) leaves no worker processes behind, and a
killed save no temporary file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from safeliquid.checkpoint import atomic_save
from safeliquid.train import data

# A pool like collect's whose worker sleeps a minute: without its initializer the worker outlives a killed parent
# by that minute (it only notices the broken pipe when it asks for the next task).
SCRIPT = """
import multiprocessing as mp, os, sys, time
from concurrent.futures import ProcessPoolExecutor
from safeliquid.train.data import die_with_parent
init = {"initializer": die_with_parent, "initargs": (os.getpid(),)} if sys.argv[1] == "guarded" else {}
with ProcessPoolExecutor(2, mp_context=mp.get_context("spawn"), **init) as pool:
    started = [pool.submit(time.sleep, 1.0) for _ in range(2)]
    [f.result() for f in started]  # both workers initialised (their imports take seconds)
    futures = [pool.submit(time.sleep, 60) for _ in range(2)]
    print("submitted", flush=True)
    [f.result() for f in futures]
"""


def children(pid: int) -> list[int]:
    """The pids whose parent is ``pid`` (from /proc)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _orphans(mode: str) -> list[int]:
    """Start the pool script, SIGKILL it once its workers sleep, and return its child processes (the workers
    and multiprocessing's resource tracker) still alive 5 s later."""
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, mode], stdout=subprocess.PIPE, text=True)
    workers: list[int] = []
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "submitted"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(workers) < 2:
            workers = [c for c in children(proc.pid) if "spawn_main" in Path(f"/proc/{c}/cmdline").read_text()]
            time.sleep(0.1)
        assert len(workers) == 2, "the pool's workers did not start"
        workers = children(proc.pid)  # with multiprocessing's resource tracker
        time.sleep(1.0)  # inside time.sleep(60)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        time.sleep(5.0)
        return [w for w in workers if alive(w)]
    finally:
        if proc.poll() is None:
            proc.kill()
        for w in workers:
            if alive(w):
                os.kill(w, signal.SIGKILL)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc; PR_SET_PDEATHSIG is Linux's")
def test_a_killed_parents_workers_end_with_it():
    assert _orphans("bare"), "the unguarded pool's workers should outlive their parent (else the test shows nothing)"
    assert _orphans("guarded") == [], "a guarded worker (or the resource tracker) outlived its killed parent"


def test_collect_guards_its_workers(monkeypatch):
    seen = {}

    class Pool:
        def __init__(self, *args, **kwargs):
            seen.update(kwargs)
            raise RuntimeError("stop here")

    monkeypatch.setattr(data, "ProcessPoolExecutor", Pool)
    with pytest.raises(RuntimeError, match="stop here"):
        data.collect("safeliquid/Navigate-v0", [0], workers=2)
    assert seen["initializer"] is data.die_with_parent and seen["initargs"] == (os.getpid(),)


def test_a_killed_saves_temporary_file_is_removed_by_the_next_save(tmp_path):
    target = tmp_path / "last.pt"
    stale = tmp_path / ".last.pt.abc123.tmp"
    stale.write_bytes(b"")  # what a save killed between mkstemp and os.replace leaves
    atomic_save({"a": 1}, target)
    assert target.exists() and not stale.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]
