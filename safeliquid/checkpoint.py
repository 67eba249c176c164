"""Checkpoint files: saving is atomic (write a temporary file in the same folder, then rename), so an
interrupted save never leaves a broken checkpoint behind. Loading checks the
format and version and names the file and the problem instead of surfacing a
traceback from deep inside torch.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

FORMAT = "safeliquid-policy"
VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used; the message names the file and what is wrong."""


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save(obj)`` to ``path`` via a temporary file and ``os.replace`` (atomic on POSIX)."""
    return _atomic_write(path, lambda fh: torch.save(obj, fh))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """``text`` (UTF-8) to ``path``, atomically as :func:`atomic_save`."""
    return _atomic_write(path, lambda fh: fh.write(text.encode()))


def _atomic_write(path: str | os.PathLike, write: Callable[[Any], Any]) -> Path:
    """``write(binary file)`` into a temporary file beside ``path``, synced, then ``os.replace``-d onto it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.*.tmp"):  # left by a save that was killed (SIGKILL)
        stale.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would make shared checkpoints unreadable to others
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def read(path: str | os.PathLike, what: str = "checkpoint") -> dict[str, Any]:
    """Load a dict saved by :func:`atomic_save` (tensors and plain data only), naming the file on failure."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{what} {path} does not exist")
    if not path.is_file():
        raise CheckpointError(f"{what} {path} is not a file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{what} {path} is empty (0 bytes): a save was interrupted, or it is not a checkpoint")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for truncated or foreign files
        first = (str(err).splitlines() or [""])[0][:120]
        raise CheckpointError(
            f"{what} {path} could not be read ({type(err).__name__}: {first}); "
            "the file is corrupt, truncated or not a safeliquid file"
        ) from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{what} {path} holds a {type(obj).__name__}, expected a safeliquid dict")
    return obj
