"""Options declared once: a dataclass field carries its help, its allowed values and its range, and from
that one declaration come the validation (:func:`validate`, one check per option) and the command line
(:func:`add_arguments`, :func:`from_args`).

    @dataclass
    class RunConfig:
        units: int = option(19, "neurons in the cell", low=1)
        lr: float = option(3e-3, "Adam learning rate", low=0.0, open_low=True)
        cell_dt: float | None = option(None, "ODE time per step; none: the environment's dt", low=0.0)

        def __post_init__(self) -> None:
            validate(self)

Types supported on the command line: ``int``, ``float``, ``str`` (each may be ``| None``: a number option
reads ``none`` as None, and so does a string option whose choices hold None), ``bool`` (a flag),
``list[str] | None`` (``nargs="+"``) and ``dict`` (``KEY=VALUE`` pairs, each value read as JSON where it
parses, else a string).
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable
from dataclasses import MISSING, Field, field, fields
from typing import Any

_META = "safeliquid.option"


def option(
    default: Any,
    help: str,
    *,
    choices: tuple[Any, ...] | None = None,
    low: float | None = None,
    high: float | None = None,
    open_low: bool = False,
    check: Callable[[Any], None] | None = None,
    flag: str | None = None,
    experimental: bool = False,
) -> Any:
    """A dataclass field with its ``help`` text, its ``choices`` or its range ``[low, high]`` (``(low, high]``
    with ``open_low``). ``check(value)``: a further test of a given (not None) value that raises
    ``ValueError`` with a message about the value (the option's name is put before it). ``flag``: the
    command-line name if not the field's (``"env"`` for ``env_id``). ``experimental``: a research knob,
    listed under its own heading in ``--help``. A ``dict`` or ``list`` default is copied per instance."""
    meta = {_META: {"help": help, "choices": choices, "low": low, "high": high, "open_low": open_low,
                    "check": check, "flag": flag, "experimental": experimental}}  # fmt: skip
    if isinstance(default, dict | list):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


def _spec(f: Field) -> dict[str, Any] | None:
    return f.metadata.get(_META)


def _annotation(f: Field) -> str:
    """A field's annotation as text (``"int"``, ``"list[str] | None"``): postponed annotations are text already."""
    return f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))


def _parts(f: Field) -> tuple[str, bool]:
    """``(base kind, optional)``: ``"float | None"`` -> ``("float", True)``, ``"list[str] | None"`` -> ``("list",
    True)``."""
    parts = [part.strip() for part in _annotation(f).split("|")]
    kinds = [part.split("[")[0] for part in parts if part != "None"]
    return (kinds[0] if len(kinds) == 1 else " | ".join(kinds)), "None" in parts


def flag(f: Field) -> str:
    """The command-line spelling of a field: ``eval_every`` -> ``--eval-every`` (or its declared ``flag``)."""
    spec = _spec(f) or {}
    return "--" + (spec.get("flag") or f.name).replace("_", "-")


_KINDS: dict[str, tuple[type, ...]] = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,),
                                       "list": (list, tuple), "tuple": (list, tuple), "dict": (dict,)}  # fmt: skip
_PHRASES = {"int": "an integer", "float": "a number", "str": "a string", "bool": "true or false",
            "list": "a list", "tuple": "a list", "dict": "a mapping of keyword arguments"}  # fmt: skip


def check_types(obj: Any) -> None:
    """Check every field of the dataclass instance ``obj`` against its annotation (``int``, ``float``, ``str``,
    ``bool``, ``list[...]``, ``tuple[...]``, ``dict``, each optionally ``| None``; a list's items when they are
    numbers or strings). Raises ``ValueError`` naming the field. A config read from a file is checked so before
    anything is built from it."""
    for f in fields(obj):
        text = _annotation(f)
        value = getattr(obj, f.name)
        parts = [part.strip() for part in text.split("|")]
        if value is None and "None" in parts:
            continue
        kinds = [part.split("[")[0] for part in parts if part != "None"]
        allowed = tuple(t for kind in kinds for t in _KINDS.get(kind, (object,)))
        ok = isinstance(value, allowed) and not (isinstance(value, bool) and "bool" not in kinds)
        if ok and "int" in kinds and "float" not in kinds and isinstance(value, float):
            ok = False
        if ok and isinstance(value, list | tuple):
            item = next((p[p.index("[") + 1 : p.rindex("]")].split(",")[0].strip() for p in parts if "[" in p), None)
            if item in ("int", "float", "str"):
                ok = all(isinstance(v, _KINDS[item]) and not isinstance(v, bool) for v in value)
        if not ok:
            expected = " or ".join(_PHRASES.get(kind, kind) for kind in kinds)
            if text.count("[") and kinds[0] in ("list", "tuple"):
                expected = text.replace(" | None", "")
            raise ValueError(f"{f.name} must be {expected}{' or None' if 'None' in parts else ''}, got {value!r}")


def validate(obj: Any) -> None:
    """Check every field of the dataclass instance ``obj``: its type (:func:`check_types`), then each declared
    option's range, choices and ``check``. Raises ``ValueError`` naming the option, what it got and what it
    expects."""
    check_types(obj)
    for f in fields(obj):
        spec = _spec(f)
        value, name = getattr(obj, f.name), f.name
        if spec is None or value is None:
            continue
        kind, _ = _parts(f)
        if kind in ("int", "float"):
            if not math.isfinite(value):
                raise ValueError(f"{name} must be finite, got {value!r}")
            low, high = spec["low"], spec["high"]
            if low is not None and (value <= low if spec["open_low"] else value < low):
                raise ValueError(f"{name} must be {'>' if spec['open_low'] else '>='} {low}, got {value!r}")
            if high is not None and value > high:
                raise ValueError(f"{name} must be <= {high}, got {value!r}")
        elif kind == "list" and not value:
            raise ValueError(f"{name} must be a non-empty list or None, got {value!r}")
        if spec["choices"] is not None and value not in spec["choices"]:
            shown = ", ".join("none" if c is None else str(c) for c in spec["choices"])
            raise ValueError(f"{name} must be one of {shown}; got {value!r}")
        if spec["check"] is not None:
            try:
                spec["check"](value)
            except ValueError as err:
                raise ValueError(f"{name}: {err}") from None


def _pairs(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` -> ``(KEY, VALUE read as JSON where it parses, else the string)``."""
    key, sep, raw = text.partition("=")
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE with KEY a keyword argument name, got {text!r}")
    try:
        return key, json.loads(raw)
    except json.JSONDecodeError:
        return key, raw


def _scalar(kind: str, none: bool) -> Callable[[str], Any]:
    """An argparse type for ``kind``; with ``none``, the text ``none`` reads as None."""
    convert = {"int": int, "float": float, "str": str}[kind]

    def parse(text: str) -> Any:
        return None if none and text.lower() == "none" else convert(text)

    parse.__name__ = {"int": "integer", "float": "number", "str": "text"}[kind]  # argparse's "invalid ... value"
    return parse


def _default(f: Field) -> Any:
    return f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]


def add_arguments(
    parser: argparse.ArgumentParser, *classes: type, labels: tuple[str, ...] = (), given_only: bool = False
) -> None:
    """One command-line option per declared field of the dataclasses ``classes``, with its help, its choices and
    its default. Values are checked by the dataclass itself (:func:`validate`) when :func:`from_args` builds it.

    With several classes (one command, several algorithms: ``labels`` name them), a field they share is one
    option; nothing is set unless given, so each class keeps its own default (the help lists them). So too with
    ``given_only``: the parsed namespace holds only the options given (a preset can fill the others)."""
    experimental = parser.add_argument_group("experimental (research knobs that did not help in the recorded runs)")
    owners: dict[str, list[tuple[str, Field]]] = {}
    for label, cls in zip(labels or ("",) * len(classes), classes, strict=True):
        for f in fields(cls):
            if _spec(f) is not None:
                owners.setdefault(f.name, []).append((label, f))
    shared = len(classes) > 1
    unset = shared or given_only
    for declared in owners.values():
        f = declared[0][1]
        spec = _spec(f)
        assert spec is not None
        default = argparse.SUPPRESS if unset else _default(f)
        group = experimental if spec["experimental"] else parser
        kind, optional = _parts(f)
        help_text = spec["help"]
        if spec["low"] is not None or spec["high"] is not None:
            low = "" if spec["low"] is None else f"{spec['low']} {'<' if spec['open_low'] else '<='} "
            high = "" if spec["high"] is None else f" <= {spec['high']}"
            help_text += f"; {low}{(spec['flag'] or f.name).upper()}{high}"
        if unset:
            defaults = {label: _default(g) for label, g in declared}
            if len({repr(v) for v in defaults.values()}) == 1:
                help_text += f" (default: {_shown(next(iter(defaults.values())))})"
            else:
                help_text += " (default: " + ", ".join(f"{k} {_shown(v)}" for k, v in defaults.items()) + ")"
            if len(declared) < len(classes):
                help_text += f" [{', '.join(label for label, _ in declared)} only]"
        name, dest, shown = flag(f), f.name, (spec["flag"] or f.name).upper()
        if kind == "bool":
            group.add_argument(name, dest=dest, action=argparse.BooleanOptionalAction, default=default, help=help_text)
        elif kind == "dict":
            group.add_argument(name, dest=dest, nargs="*", type=_pairs, default=None if not unset else default,
                               metavar="KEY=VALUE", help=help_text)  # fmt: skip
        elif kind == "list":
            group.add_argument(name, dest=dest, nargs="+", default=default, metavar=shown, help=help_text)
        else:
            choices = spec["choices"]
            none = optional and (kind != "str" or (choices is not None and None in choices))
            metavar = "{" + ",".join("none" if c is None else str(c) for c in choices) + "}" if choices else None
            group.add_argument(name, dest=dest, type=_scalar(kind, none), default=default, choices=choices,
                               metavar=metavar or shown, help=help_text)  # fmt: skip


def _shown(value: Any) -> str:
    return "none" if value is None else str(value)


def reject_foreign(cls: type, args: argparse.Namespace, classes: tuple[type, ...], what: str) -> None:
    """Raise ``ValueError`` naming the options given in ``args`` that belong to ``classes`` but not to ``cls``
    (``what`` names the choice that made ``cls``, e.g. ``--algo ppo``): nothing given is dropped silently."""
    own = {f.name for f in fields(cls)}
    foreign = sorted(
        {flag(f) for other in classes for f in fields(other) if f.name not in own and hasattr(args, f.name)}
    )
    if foreign:
        raise ValueError(f"{', '.join(foreign)} {'is' if len(foreign) == 1 else 'are'} not an option of {what}")


def from_args(cls: type, args: argparse.Namespace, **overrides: Any) -> Any:
    """The dataclass ``cls`` from the parsed options of :func:`add_arguments` (every declared field that was
    parsed, none dropped), with ``overrides`` on top. A ``ValueError`` names the option as it is typed
    (``--eval-every``)."""
    values = {}
    for f in fields(cls):
        if _spec(f) is None or f.name in overrides or not hasattr(args, f.name):  # unset: a shared parser's
            continue  # option that was not given (add_arguments with several classes): the class default
        value = getattr(args, f.name)
        values[f.name] = dict(value or ()) if _parts(f)[0] == "dict" else value
    try:
        return cls(**values, **overrides)
    except ValueError as err:
        text = str(err)
        for f in fields(cls):
            if _spec(f) is not None and f.name not in overrides and text.startswith((f"{f.name} ", f"{f.name}:")):
                raise ValueError(flag(f) + text[len(f.name) :]) from None
        raise
