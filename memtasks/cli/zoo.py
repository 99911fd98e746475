"""What ``memtasks models`` lists of each model: name, family, size knob and its default.

The model families are torch modules, so importing them imports torch (seconds). Without plugins,
the built-in families are read from their source instead, where they register: each class
decorated ``@register_model("name", config=Cfg)``, its docstring's first line, its ``size_knob``
(inherited through classes of the same module, else ``MemoryModel``'s) and that field's default
in ``Cfg``. The registry stays the one owner of names: this reads its decorators, and
tests/test_cli_startup.py checks that it agrees with the imported registry for every model. Where
a registration is not plain enough to read (a config built by a call, a base class from another
module) the listing imports the registry.
"""
from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BASE_CLASS = "MemoryModel"
_MISSING = object()  # a class that does not set the attribute or field looked up


@dataclass(frozen=True)
class ModelEntry:
    """One row of the plain listing."""

    name: str
    family: str  # the class docstring's first line, or the class name
    size_knob: str | None  # the config field a parameter budget resizes; None: not resizable
    default_size: Any  # that field's default; None without a knob

    def row(self) -> dict[str, Any]:
        knob = f"{self.size_knob}={self.default_size}" if self.size_knob else "-"
        return {"model": self.name, "family": self.family, "size knob": knob}


class _Unreadable(Exception):
    """A registration this reader cannot resolve without running the code."""


def registry_entries() -> list[ModelEntry]:
    """Every registered model, from the imported registry (imports torch, and the plugins loaded)."""
    from memtasks.cli.common import plugin_code
    from memtasks.models import MODELS, model_config

    entries = []
    for name in MODELS.names():
        cls = MODELS.get(name)
        knob = cls.size_knob
        with plugin_code(cls, f"model {name!r}: its default config"):
            default = getattr(model_config(name), knob) if knob else None
        entries.append(ModelEntry(name, _family(cls.__doc__, cls.__qualname__), knob, default))
    return entries


def source_entries() -> list[ModelEntry] | None:
    """The built-in models read from their source without importing them; None when an entry
    point declares model plugins (they must be imported) or a registration cannot be read."""
    if importlib.metadata.entry_points(group="memtasks.models"):
        return None
    spec = importlib.util.find_spec("memtasks.models")
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(next(iter(spec.submodule_search_locations)))
    try:
        default_knob = _class_attr(_classes(root / "base.py")[BASE_CLASS], "size_knob")
        if default_knob is _MISSING:
            return None
        entries = []
        for path in sorted(root.rglob("*.py")):
            text = path.read_text(encoding="utf-8")
            if "@register_model(" in text:
                entries += _module_entries(ast.parse(text, str(path)), default_knob)
    except (OSError, SyntaxError, KeyError, _Unreadable):
        return None
    return sorted(entries, key=lambda e: e.name)


def _family(doc: str | None, fallback: str) -> str:
    lines = (doc or "").strip().splitlines()
    return lines[0].rstrip(".") if lines else fallback


def _classes(source: Path | ast.Module) -> dict[str, ast.ClassDef]:
    tree = ast.parse(source.read_text(encoding="utf-8"), str(source)) if isinstance(source, Path) else source
    return {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}


def _module_entries(tree: ast.Module, default_knob: Any) -> list[ModelEntry]:
    classes = _classes(tree)
    entries = []
    for cls in classes.values():
        for deco in cls.decorator_list:
            if not (isinstance(deco, ast.Call) and _called(deco) == "register_model"):
                continue
            args = [*deco.args, *(k.value for k in deco.keywords if k.arg == "config")]
            if len(args) != 2 or not isinstance(args[1], ast.Name):
                raise _Unreadable(cls.name)
            name = _literal(args[0])
            knob = _inherited(cls, classes, lambda c: _class_attr(c, "size_knob"))
            knob = default_knob if knob is _MISSING else knob
            default = None
            if knob is not None:
                config = classes.get(args[1].id)
                default = _MISSING if config is None else _inherited(config, classes, lambda c: _field_default(c, knob))
                if default is _MISSING:
                    raise _Unreadable(f"{args[1].id}.{knob}")
            entries.append(ModelEntry(name, _family(ast.get_docstring(cls, clean=False), cls.name), knob, default))
    return entries


def _called(call: ast.Call) -> str:
    func = call.func
    return func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""


def _inherited(cls: ast.ClassDef, classes: dict[str, ast.ClassDef], lookup: Any) -> Any:
    """``lookup(cls)``, else its bases' in this module, depth first (as single inheritance
    resolves); ``_MISSING`` when none sets it. A base from elsewhere, other than ``MemoryModel``,
    is unreadable."""
    value = lookup(cls)
    for base in cls.bases if value is _MISSING else ():
        if isinstance(base, ast.Name) and base.id in classes:
            value = _inherited(classes[base.id], classes, lookup)
            if value is not _MISSING:
                break
        elif not (isinstance(base, ast.Name) and base.id == BASE_CLASS):
            raise _Unreadable(ast.unparse(base))
    return value


def _class_attr(cls: ast.ClassDef, attr: str) -> Any:
    for stmt in cls.body:
        targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target] if isinstance(stmt, ast.AnnAssign) else []
        if any(isinstance(t, ast.Name) and t.id == attr for t in targets) and stmt.value is not None:
            return _literal(stmt.value)
    return _MISSING


def _field_default(cls: ast.ClassDef, field: str) -> Any:
    for stmt in cls.body:
        if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and stmt.target.id == field:
            if stmt.value is None:
                raise _Unreadable(f"{cls.name}.{field} has no default")
            return _literal(stmt.value)
    return _MISSING


def _literal(node: ast.expr) -> Any:
    try:
        return ast.literal_eval(node)
    except ValueError:
        raise _Unreadable(ast.unparse(node)) from None
