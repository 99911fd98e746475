"""Helpers for frozen dataclass configs: strict construction from dicts and range checks."""
from __future__ import annotations

import dataclasses
import difflib
import math
import typing
from typing import Any, Mapping, TypeVar

from memtasks.core.errors import MemtasksError

C = TypeVar("C")


class ConfigError(MemtasksError):
    """A configuration value or key is wrong; the message names the field."""


class ConfigKeyError(ConfigError, TypeError):
    """A configuration names a key that does not exist (a ``TypeError``, as Python's own)."""


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
            raise ConfigKeyError(unknown_key_message(key, allowed, what or cls.__name__))


def from_dict(cls: type[C], data: Mapping[str, Any], what: str | None = None) -> C:
    """Build dataclass ``cls`` from ``data``, rejecting unknown keys by name."""
    check_keys(cls, data, what)
    missing = [
        f.name
        for f in dataclasses.fields(cls)
        if f.init and f.name not in data
        and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING  # type: ignore[misc]
    ]
    if missing:
        raise ConfigError(
            f"{what or cls.__name__}: {', '.join(map(repr, missing))} has no default in "
            f"{cls.__module__}.{cls.__qualname__}; give every config field a default (or set it)"
        )
    return cls(**data)  # type: ignore[call-arg]


def check_int(owner: str, name: str, value: Any, lo: int | None = None, hi: int | None = None) -> None:
    """Raise ``ValueError`` unless ``value`` is an int in [lo, hi] (bounds optional)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{owner}.{name} must be an integer, got {value!r}")
    _check_range(owner, name, value, lo, hi)


def check_float(
    owner: str, name: str, value: Any, lo: float | None = None, hi: float | None = None, *, open_lo: bool = False
) -> None:
    """Raise ``ValueError`` unless ``value`` is a finite real number in [lo, hi] ((lo, hi] with open_lo)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{owner}.{name} must be a finite number, got {value!r}")
    if open_lo and lo is not None and value <= lo:
        hi_s = "inf" if hi is None else hi
        raise ConfigError(f"{owner}.{name}={value!r} is out of range; allowed: ({lo}, {hi_s}]")
    _check_range(owner, name, value, lo, hi)


def check_choice(owner: str, name: str, value: Any, choices: typing.Sequence[Any]) -> None:
    if value not in choices:
        raise ConfigError(f"{owner}.{name}={value!r} is not allowed; choose one of {', '.join(map(repr, choices))}")


def _check_range(owner: str, name: str, value: float, lo: float | None, hi: float | None) -> None:
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        lo_s = "-inf" if lo is None else lo
        hi_s = "inf" if hi is None else hi
        raise ConfigError(f"{owner}.{name}={value!r} is out of range; allowed: [{lo_s}, {hi_s}]")


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
        raise ConfigError(f"{where}: cannot parse {raw!r} ({'; '.join(errors)})")
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
        raise ConfigError(f"{where} expects a boolean (true/false), got {raw!r}")
    if tp is int:
        try:
            return int(raw)
        except ValueError:
            raise ConfigError(f"{where} expects an integer, got {raw!r}") from None
    if tp is float:
        try:
            return float(raw)
        except ValueError:
            raise ConfigError(f"{where} expects a number, got {raw!r}") from None
    if tp is str or tp is Any:
        return raw
    raise ConfigError(f"{where}: values of type {tp!r} cannot be set from the command line")
