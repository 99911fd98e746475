"""Helpers for frozen dataclass configs: strict construction from dicts and range checks."""
from __future__ import annotations

import dataclasses
import difflib
import math
import typing
from typing import Any, Mapping, TypeVar

C = TypeVar("C")


class ConfigError(ValueError):
    """A configuration value or key is wrong; the message names the field."""


def field_names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls) if f.init]


def unknown_key_message(key: str, allowed: list[str], what: str) -> str:
    close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.5)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown {what} key {key!r}{hint}; allowed: {', '.join(allowed) or 'none'}"


def check_keys(cls: type, data: Mapping[str, Any], what: str | None = None) -> None:
    """Raise ``TypeError`` naming the first key of ``data`` that ``cls`` has no field for."""
    allowed = field_names(cls)
    for key in data:
        if key not in allowed:
            raise TypeError(unknown_key_message(key, allowed, what or cls.__name__))


def from_dict(cls: type[C], data: Mapping[str, Any], what: str | None = None) -> C:
    """Build dataclass ``cls`` from ``data``, rejecting unknown keys by name."""
    check_keys(cls, data, what)
    return cls(**data)  # type: ignore[call-arg]


def check_int(owner: str, name: str, value: Any, lo: int | None = None, hi: int | None = None) -> None:
    """Raise ``ValueError`` unless ``value`` is an int in [lo, hi] (bounds optional)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{owner}.{name} must be an integer, got {value!r}")
    _check_range(owner, name, value, lo, hi)


def check_float(
    owner: str, name: str, value: Any, lo: float | None = None, hi: float | None = None, *, open_lo: bool = False
) -> None:
    """Raise ``ValueError`` unless ``value`` is a finite real number in [lo, hi] ((lo, hi] with open_lo)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{owner}.{name} must be a finite number, got {value!r}")
    if open_lo and lo is not None and value <= lo:
        hi_s = "inf" if hi is None else hi
        raise ValueError(f"{owner}.{name}={value!r} is out of range; allowed: ({lo}, {hi_s}]")
    _check_range(owner, name, value, lo, hi)


def check_choice(owner: str, name: str, value: Any, choices: typing.Sequence[Any]) -> None:
    if value not in choices:
        raise ValueError(f"{owner}.{name}={value!r} is not allowed; choose one of {', '.join(map(repr, choices))}")


def _check_range(owner: str, name: str, value: float, lo: float | None, hi: float | None) -> None:
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        lo_s = "-inf" if lo is None else lo
        hi_s = "inf" if hi is None else hi
        raise ValueError(f"{owner}.{name}={value!r} is out of range; allowed: [{lo_s}, {hi_s}]")


def parse_typed(tp: Any, raw: str, where: str) -> Any:
    """Parse ``raw`` as type ``tp`` (int, float, bool, str, Optional, tuples of those)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if raw.lower() in ("none", "null") and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return parse_typed(arg, raw, where)
            except ValueError as exc:
                errors.append(str(exc))
        raise ValueError(f"{where}: cannot parse {raw!r} ({'; '.join(errors)})")
    if origin is tuple:
        parts = [p for p in raw.strip("()[] ").split(",") if p.strip()]
        inner = args[0] if args else str
        return tuple(parse_typed(inner, p.strip(), where) for p in parts)
    if tp is bool:
        low = raw.lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{where} expects a boolean (true/false), got {raw!r}")
    if tp is int:
        try:
            return int(raw)
        except ValueError:
            raise ValueError(f"{where} expects an integer, got {raw!r}") from None
    if tp is float:
        try:
            return float(raw)
        except ValueError:
            raise ValueError(f"{where} expects a number, got {raw!r}") from None
    if tp is str or tp is Any:
        return raw
    raise ValueError(f"{where}: values of type {tp!r} cannot be set from the command line")
