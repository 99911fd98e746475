"""The errors of reading, collecting and writing results: each message names the file or folder
and says what to do, so the command line prints it on one line."""
from __future__ import annotations

from memtasks.core.errors import MemtasksError


class ResultsError(MemtasksError):
    """A problem with the user's run records or output file; the message names it (a ``ValueError``)."""


class RecordError(ResultsError):
    """A run-record file is missing, corrupt or foreign; the message names the file."""


class NoRecordsError(ResultsError):
    """A runs folder that does not exist, or holds no run record (of the groups asked for)."""


class MixedGroupsError(ResultsError):
    """Records of several groups where one ranking or one comparison would mix them."""


class OverwriteError(ResultsError):
    """An output file that was not written for the same groups; replacing it needs ``force``."""
