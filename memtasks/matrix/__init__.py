"""Benchmark matrices: a TOML spec of tasks × models × seeds, expanded into runs and executed."""
from memtasks.matrix.spec import MatrixSpec, load_spec

__all__ = ["MatrixSpec", "load_spec"]
