"""The one base class of the errors a user can act on.

Anything raised as a :class:`MemtasksError` is a wrong input (a name, a value, a file) whose
message says what was wrong and what would be right; the command line prints it on one line
and exits with status 2. Every other exception is a bug and is reported as one.
"""
from __future__ import annotations


class MemtasksError(ValueError):
    """A problem with the user's input; the message names the flag, field or file."""
