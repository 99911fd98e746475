"""One registry class for every kind of plug-in (tasks, models).

A registry maps snake_case names to classes. Registration happens once, at the
definition, through a decorator. Outside packages add entries through a
``importlib.metadata`` entry-point group, loaded lazily on first lookup.
"""
from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import importlib.util
import logging
import re
import sys
from pathlib import Path
from typing import Callable, Generic, Iterator, TypeVar

from memtasks.core.errors import MemtasksError

log = logging.getLogger(__name__)

T = TypeVar("T")
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class RegistryError(MemtasksError):
    """A name could not be registered or found."""


class Registry(Generic[T]):
    """Name -> class, with "did you mean" suggestions and entry-point plugins.

    Args:
        kind: what is registered ("task", "model"), used in messages.
        base: every registered class must subclass it.
        entry_point_group: the ``importlib.metadata`` group plugins declare.
        check: optional extra contract check run on each class at registration.
    """

    def __init__(
        self,
        kind: str,
        base: type,
        entry_point_group: str,
        check: Callable[[type], None] | None = None,
    ) -> None:
        self.kind = kind
        self.base = base
        self.entry_point_group = entry_point_group
        self._check = check
        self._entries: dict[str, type] = {}
        self._entry_points_loaded = False

    def register(self, name: str) -> Callable[[type], type]:
        if not isinstance(name, str) or not _NAME.match(name):
            raise RegistryError(f"{self.kind} name {name!r} must be snake_case (letters, digits, _)")

        def decorator(cls: type) -> type:
            if not (isinstance(cls, type) and issubclass(cls, self.base)):
                raise RegistryError(
                    f"cannot register {cls!r} as {self.kind} {name!r}: "
                    f"it must subclass {self.base.__module__}.{self.base.__qualname__}"
                )
            existing = self._entries.get(name)
            # Re-executing the same module (a plugin imported twice) re-registers the same
            # definition; anything else under a taken name is a clash.
            same_definition = existing is not None and (existing.__module__, existing.__qualname__) == (
                cls.__module__,
                cls.__qualname__,
            )
            if existing is not None and not same_definition:
                raise RegistryError(
                    f"{self.kind} name {name!r} is already registered by "
                    f"{existing.__module__}.{existing.__qualname__}"
                )
            if self._check is not None:
                self._check(cls)
            cls.registry_name = name  # type: ignore[attr-defined]
            self._entries[name] = cls
            return cls

        return decorator

    def unregister(self, name: str) -> None:
        """Remove an entry (used by tests that register throw-away classes)."""
        self._entries.pop(name, None)

    def load_entry_points(self) -> None:
        """Import every module declared in this registry's entry-point group."""
        if self._entry_points_loaded:
            return
        self._entry_points_loaded = True
        for ep in importlib.metadata.entry_points(group=self.entry_point_group):
            try:
                ep.load()
            except Exception as exc:  # a broken plugin must not break the suite
                log.warning("could not load %s plugin %r (%s): %s", self.kind, ep.name, ep.value, exc)

    def get(self, name: str) -> type:
        if name not in self._entries:
            self.load_entry_points()
        try:
            return self._entries[name]
        except KeyError:
            raise RegistryError(self.unknown_message(name)) from None

    def unknown_message(self, name: str) -> str:
        close = difflib.get_close_matches(str(name), self.names(), n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return f"unknown {self.kind} {name!r}{hint or ';'} known: {', '.join(self.names())}"

    def names(self) -> list[str]:
        self.load_entry_points()
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        self.load_entry_points()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


def load_plugin(spec: str) -> None:
    """Import a plugin given as a file path (``my_model.py``) or a module path (``pkg.mod``).

    Importing runs the module's registration decorators.
    """
    path = Path(spec)
    if spec.endswith(".py") or path.exists():
        if not path.is_file():
            raise RegistryError(f"plugin file {spec!r} does not exist")
        mod_name = "memtasks_plugin_" + re.sub(r"\W", "_", str(path.resolve()))
        if mod_name in sys.modules:
            return
        module_spec = importlib.util.spec_from_file_location(mod_name, path)
        if module_spec is None or module_spec.loader is None:
            raise RegistryError(f"cannot import plugin file {spec!r}")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[mod_name] = module
        try:
            module_spec.loader.exec_module(module)
        except RegistryError:
            del sys.modules[mod_name]
            raise
        except Exception as exc:
            del sys.modules[mod_name]
            raise RegistryError(f"plugin file {spec}: {_where(exc, path)}") from exc
        return
    try:
        importlib.import_module(spec)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (spec == exc.name or spec.startswith(exc.name + ".")):
            raise RegistryError(f"plugin {spec!r} is neither a .py file nor an importable module ({exc})") from exc
        raise RegistryError(f"plugin module {spec}: {_where(exc, None)}") from exc
    except RegistryError:
        raise
    except Exception as exc:
        raise RegistryError(f"plugin module {spec}: {_where(exc, None)}") from exc


def _where(exc: BaseException, path: Path | None) -> str:
    """``line N: ErrorType: message`` for an exception raised while importing a plugin: the line
    of a syntax error, else the deepest frame in the plugin file (or anywhere, for a module)."""
    if isinstance(exc, SyntaxError):
        return f"line {exc.lineno}: SyntaxError: {exc.msg}"
    import traceback

    frames = traceback.extract_tb(exc.__traceback__)
    if path is not None:
        mine = [f for f in frames if Path(f.filename).resolve() == path.resolve()]
        frames = mine or frames
    frames = [f for f in frames if "importlib" not in f.filename] or frames
    loc = f"line {frames[-1].lineno}: " if frames and path is not None else (
        f"{frames[-1].filename}, line {frames[-1].lineno}: " if frames else "")
    return f"{loc}{type(exc).__name__}: {exc}"
