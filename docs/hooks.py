"""mkdocs hook: a source tree for the API pages in which ``envs/`` and ``policies/`` sit where pyproject's
``package-dir`` installs them (``safeliquid.envs``, ``safeliquid.policies``), so that mkdocstrings finds them."""

from __future__ import annotations

import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TREE = ROOT / "site-src"


def build_tree() -> None:
    shutil.rmtree(TREE, ignore_errors=True)
    package = TREE / "safeliquid"
    package.mkdir(parents=True)
    for item in (ROOT / "safeliquid").iterdir():
        if item.name != "__pycache__":
            (package / item.name).symlink_to(item)
    for name in ("envs", "policies"):
        (package / name).symlink_to(ROOT / name)


# At load time: mkdocs loads hooks while it reads mkdocs.yml, before mkdocstrings resolves its search paths
# (which drops a path that does not exist yet).
build_tree()
