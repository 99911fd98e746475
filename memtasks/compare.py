"""Moved to :mod:`memtasks.results.comparison`; this name stays until the command line imports it from there."""
from memtasks.results.comparison import compare

__all__ = ["compare"]
