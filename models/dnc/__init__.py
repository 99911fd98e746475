"""The Differentiable Neural Computer (Graves et al. 2016), registered as ``dnc``.

``memory.py``: the memory operations as pure functions, each with its equation;
``interface.py``: cutting the interface vector; ``step.py``: one memory step from PyTorch
operators; ``cpu_kernel.py`` and ``sequence.py``: the same recurrence as C kernels with a
hand-written backward, for float32 on CPU; ``model.py``: the registered model.
"""
from memtasks.models.dnc.model import DNC, DNCConfig, DNCState

__all__ = ["DNC", "DNCConfig", "DNCState"]
