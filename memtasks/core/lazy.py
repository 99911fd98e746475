"""torch, imported on first use.

A module that needs torch only inside its functions (every task module, the metrics) writes
``from memtasks.core.lazy import torch`` instead of ``import torch``, and ``from __future__ import
annotations`` so its annotations stay strings. Importing that module then costs milliseconds, not
torch's seconds, and ``memtasks tasks`` lists the task registry without importing torch; the first
``torch.<name>`` anywhere imports it. Every access is forwarded to the real module, so the code
behaves exactly as with ``import torch`` (a test's ``monkeypatch.setattr(torch, ...)`` included).
"""
from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

__all__ = ["LazyModule", "torch"]


class LazyModule(types.ModuleType):
    """A stand-in for the module ``name`` that imports it on its first attribute access.

    Not an entry of ``sys.modules``: ``"torch" in sys.modules`` still tells whether torch was
    imported. On that first access the stand-in also puts the real module in its place in every
    loaded module's namespace, so later calls (``torch.zeros`` in a sampling loop) cost what they
    cost with ``import torch``; until then, and wherever a reference escaped, it forwards.
    """

    def __getattr__(self, attr: str) -> Any:  # only called for names the stand-in itself lacks
        module = importlib.import_module(self.__name__)
        if not self.__dict__.get("_replaced"):
            self.__dict__["_replaced"] = True
            _replace(self, module)
        return getattr(module, attr)

    def __dir__(self) -> list[str]:
        return dir(importlib.import_module(self.__name__))


def _replace(stand_in: LazyModule, module: types.ModuleType) -> None:
    """Bind ``module`` wherever a module's global name is bound to ``stand_in``."""
    for loaded in list(sys.modules.values()):
        namespace = getattr(loaded, "__dict__", None)
        if not isinstance(namespace, dict):
            continue
        for key, value in list(namespace.items()):
            if value is stand_in:
                namespace[key] = module


if TYPE_CHECKING:  # type checkers see the real module
    import torch as torch
else:
    torch = LazyModule("torch")
