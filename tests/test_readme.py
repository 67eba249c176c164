"""Every Python code block of the README and of the docs pages runs as written (each in a fresh namespace)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCKS = [
    (page, i, code)
    for page in PAGES
    for i, code in enumerate(re.findall(r"^```python\n(.*?)^```$", page.read_text(), flags=re.S | re.M))
]


def test_the_readme_has_its_quickstarts():
    assert sum(page.name == "README.md" for page, _, _ in BLOCKS) >= 3


@pytest.mark.parametrize(("page", "i", "code"), BLOCKS, ids=[f"{p.name}:{i}" for p, i, _ in BLOCKS])
def test_code_block_runs(page, i, code, capsys, one_thread):
    exec(compile(code, f"{page}:{i}", "exec"), {"__name__": "__docs__"})
    if page.name == "README.md":
        assert capsys.readouterr().out.strip(), "each quickstart prints its result"
