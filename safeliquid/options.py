"""Options declared once: a dataclass field carries its help, its allowed values and its range, and from
that one declaration come the validation (:func:`validate`, one check per option) and the command line
(:func:`add_arguments`, :func:`from_args`).

    @dataclass
    class RunConfig:
        units: int = option(19, "neurons in the cell", low=1)
        lr: float = option(3e-3, "Adam learning rate", low=0.0, open_low=True)

        def __post_init__(self) -> None:
            validate(self)

Types supported on the command line: ``int``, ``float``, ``str``, ``bool`` (a flag), ``list[str] | None``
(``nargs="+"``) and ``dict`` (``KEY=VALUE`` pairs, each value read as JSON where it parses, else a string).
"""

from __future__ import annotations

import argparse
import json
import math
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
    experimental: bool = False,
) -> Any:
    """A dataclass field with its ``help`` text, its ``choices`` or its range ``[low, high]`` (``(low, high]``
    with ``open_low``). ``experimental``: a research knob, listed under its own heading in ``--help``.
    A ``dict`` or ``list`` default is copied per instance."""
    meta = {_META: {"help": help, "choices": choices, "low": low, "high": high, "open_low": open_low,
                    "experimental": experimental}}  # fmt: skip
    if isinstance(default, dict | list):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


def _spec(f: Field) -> dict[str, Any] | None:
    return f.metadata.get(_META)


def _annotation(f: Field) -> str:
    """A field's annotation as text (``"int"``, ``"list[str] | None"``): postponed annotations are text already."""
    return f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))


def flag(name: str) -> str:
    """The command-line spelling of a field: ``eval_every`` -> ``--eval-every``."""
    return "--" + name.replace("_", "-")


_KINDS: dict[str, tuple[type, ...]] = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,),
                                       "list": (list, tuple), "tuple": (list, tuple), "dict": (dict,)}  # fmt: skip


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
        if ok and isinstance(value, list | tuple):
            item = next((p[p.index("[") + 1 : p.rindex("]")].split(",")[0].strip() for p in parts if "[" in p), None)
            if item in ("int", "float", "str"):
                ok = all(isinstance(v, _KINDS[item]) and not isinstance(v, bool) for v in value)
        if not ok:
            raise ValueError(f"{f.name} must be {text}, got {value!r}")


def validate(obj: Any) -> None:
    """Check every declared option of the dataclass instance ``obj``: its type, its choices and its range.
    Raises ``ValueError`` naming the option, what it got and what it expects."""
    for f in fields(obj):
        spec = _spec(f)
        if spec is None:
            continue
        value, name = getattr(obj, f.name), f.name
        kind = _annotation(f)
        if kind in ("int", "float"):
            if isinstance(value, bool) or not isinstance(value, int | float) or (kind == "int" and value != int(value)):
                raise ValueError(f"{name} must be {'an integer' if kind == 'int' else 'a number'}, got {value!r}")
            if not math.isfinite(value):
                raise ValueError(f"{name} must be finite, got {value!r}")
            low, high = spec["low"], spec["high"]
            if low is not None and (value <= low if spec["open_low"] else value < low):
                raise ValueError(f"{name} must be {'>' if spec['open_low'] else '>='} {low}, got {value!r}")
            if high is not None and value > high:
                raise ValueError(f"{name} must be <= {high}, got {value!r}")
        elif kind == "bool" and not isinstance(value, bool):
            raise ValueError(f"{name} must be true or false, got {value!r}")
        elif kind == "str" and not isinstance(value, str):
            raise ValueError(f"{name} must be a string, got {value!r}")
        elif kind == "dict" and not isinstance(value, dict):
            raise ValueError(f"{name} must be a mapping of keyword arguments, got {value!r}")
        elif kind.startswith("list") and value is not None:
            if not (isinstance(value, list | tuple) and value and all(isinstance(v, str) for v in value)):
                raise ValueError(f"{name} must be a non-empty list of names or None, got {value!r}")
        if spec["choices"] is not None and value not in spec["choices"]:
            raise ValueError(f"{name} must be one of {', '.join(map(str, spec['choices']))}; got {value!r}")


def _pairs(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` -> ``(KEY, VALUE read as JSON where it parses, else the string)``."""
    key, sep, raw = text.partition("=")
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE with KEY a keyword argument name, got {text!r}")
    try:
        return key, json.loads(raw)
    except json.JSONDecodeError:
        return key, raw


def add_arguments(parser: argparse.ArgumentParser, cls: type, skip: tuple[str, ...] = ()) -> None:
    """One command-line option per declared field of the dataclass ``cls`` (except ``skip``), with its help,
    its choices and its default. Values are checked by the dataclass itself (:func:`validate`) when
    :func:`from_args` builds it."""
    experimental = parser.add_argument_group("experimental (research knobs that did not help in the recorded runs)")
    for f in fields(cls):
        spec = _spec(f)
        if spec is None or f.name in skip:
            continue
        default = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
        group = experimental if spec["experimental"] else parser
        kind = _annotation(f)
        help_text = spec["help"]
        if spec["low"] is not None or spec["high"] is not None:
            low = "" if spec["low"] is None else f"{spec['low']} {'<' if spec['open_low'] else '<='} "
            high = "" if spec["high"] is None else f" <= {spec['high']}"
            help_text += f"; {low}{f.name.upper()}{high}"
        if kind == "bool":
            group.add_argument(flag(f.name), action=argparse.BooleanOptionalAction, default=default, help=help_text)
        elif kind == "dict":
            group.add_argument(flag(f.name), nargs="*", type=_pairs, default=None, metavar="KEY=VALUE", help=help_text)
        elif kind.startswith("list"):
            group.add_argument(flag(f.name), nargs="+", default=default, metavar=f.name.upper(), help=help_text)
        else:
            convert = {"int": int, "float": float, "str": str}[kind]
            group.add_argument(flag(f.name), type=convert, default=default, choices=spec["choices"],
                               metavar=None if spec["choices"] else f.name.upper(), help=help_text)  # fmt: skip


def from_args(cls: type, args: argparse.Namespace, **overrides: Any) -> Any:
    """The dataclass ``cls`` from the parsed options of :func:`add_arguments` (every declared field, none
    dropped), with ``overrides`` on top."""
    values = {}
    for f in fields(cls):
        if _spec(f) is None or f.name in overrides:
            continue
        value = getattr(args, f.name)
        kind = _annotation(f)
        values[f.name] = dict(value or ()) if kind == "dict" else value
    try:
        return cls(**values, **overrides)
    except ValueError as err:  # name the option as it was typed: eval_every -> --eval-every
        text = str(err)
        for f in fields(cls):
            if text.startswith(f"{f.name} ") and f.name not in overrides:
                raise ValueError(flag(f.name) + text[len(f.name) :]) from None
        raise
