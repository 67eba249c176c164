"""The import layers of safeliquid, checked: ``python tools/check_layers.py`` (``make lint`` runs it).

    cli -> train -> {policies, envs} -> safety -> {qp, nn} -> {_checks, _version, checkpoint, metrics, options}

A module may import modules of its own package and of the layers below its own, nothing above and no sibling
package of its layer (``policies`` and ``envs`` never import each other, nor ``qp`` and ``nn``). Every
first-party import is at module level (a function-local one hides a dependency), except under
``if TYPE_CHECKING:`` and in the package's root ``__init__``, which re-exports lazily. The repository's folders
are mapped as pyproject's ``package-dir`` maps them (``envs/`` is ``safeliquid.envs``). import-linter cannot
be used as is: it finds a package's modules under one folder, and ``safeliquid.envs`` lives outside
``safeliquid/``. Exit status 1 with one line per violation.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = {
    "safeliquid": ROOT / "safeliquid",
    "safeliquid.envs": ROOT / "envs",
    "safeliquid.policies": ROOT / "policies",
}
# Top to bottom; the packages on one line are siblings (neither may import the other).
LAYERS: list[tuple[str, ...]] = [
    ("safeliquid.cli",),
    ("safeliquid.cli_options",),
    ("safeliquid.train",),
    ("safeliquid.policies", "safeliquid.envs"),
    ("safeliquid.safety",),
    ("safeliquid.qp", "safeliquid.nn"),
    (
        "safeliquid._checks",
        "safeliquid._version",
        "safeliquid.checkpoint",
        "safeliquid.machine",
        "safeliquid.metrics",
        "safeliquid.options",
    ),
]
FACADE = "safeliquid"  # the root __init__: re-exports, lazily


def unit(module: str) -> str | None:
    """The layer entry (package or module) ``module`` belongs to, or None for the root facade."""
    for layer in LAYERS:
        for name in layer:
            if module == name or module.startswith(name + "."):
                return name
    return None


def rank(name: str) -> int:
    return next(i for i, layer in enumerate(LAYERS) if name in layer)


def modules() -> Iterator[tuple[str, Path]]:
    """Every first-party module ``(dotted name, file)``, the nested folders first claimed by their own entry."""
    for prefix, folder in FOLDERS.items():
        for path in sorted(folder.rglob("*.py")):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            name = ".".join([prefix, *parts])
            owner = max((p for p in FOLDERS if name == p or name.startswith(p + ".")), key=len)
            if owner == prefix:
                yield name, path


def imports(path: Path, name: str) -> Iterator[tuple[int, str, bool]]:
    """``(line, imported module, at module level)`` for each first-party import in ``path``, skipping
    ``if TYPE_CHECKING:`` blocks."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]

    def walk(node: ast.AST, top: bool) -> Iterator[tuple[int, str, bool]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                yield from (item for sub in child.orelse for item in walk_one(sub, top))
                continue
            yield from walk_one(child, top)

    def walk_one(node: ast.AST, top: bool) -> Iterator[tuple[int, str, bool]]:
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, top
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:  # `from pkg import sub` may name a submodule: judge pkg.sub
                yield node.lineno, f"{base}.{alias.name}" if alias.name != "*" else base, top
        else:
            nested = top and not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
            yield from walk(node, nested)

    yield from (item for item in walk(tree, True) if item[1].split(".")[0] == "safeliquid")


def violations() -> list[str]:
    out = []
    for name, path in modules():
        here = unit(name)
        where = path.relative_to(ROOT)
        for line, target, top in imports(path, name):
            there = unit(target)
            if here is None:  # the facade may import anything, lazily (module-level imports would cycle)
                continue
            if not top:
                out.append(f"{where}:{line}: function-local import of {target} (import at module level)")
            if there is None:  # `from safeliquid import x`: the facade; only its version is bottom-layer
                if target not in ("safeliquid", "safeliquid.__version__"):
                    out.append(f"{where}:{line}: {name} imports the package facade ({target})")
                continue
            if there == here:
                continue
            if rank(there) == rank(here):
                out.append(f"{where}:{line}: {here} imports its sibling {there}")
            elif rank(there) < rank(here):
                out.append(f"{where}:{line}: {here} imports {there}, a layer above it")
    return out


def main() -> int:
    found = violations()
    for line in found:
        print(line)
    if found:
        print(f"{len(found)} import-layer violation(s); the layers: tools/check_layers.py", file=sys.stderr)
        return 1
    print(f"import layers kept ({sum(1 for _ in modules())} modules)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
