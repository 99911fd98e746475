"""Moved to :mod:`memtasks.results`; these names stay until the command line imports them from there."""
from memtasks.results.leaderboard import build_leaderboard, write_leaderboard

__all__ = ["build_leaderboard", "write_leaderboard"]
