"""Run results, from birth to table: one package owns the record.

* :mod:`~memtasks.results.schema`: the typed, versioned run result (``result.json``);
* :mod:`~memtasks.results.store`: run folders, atomic writes, reading and validating, "is this
  run finished", collecting records into a pandas table and exporting it (CSV / JSON);
* :mod:`~memtasks.results.aggregate`: the one seed aggregation (leaderboard and compare), with
  the statistics of :mod:`~memtasks.results.stats` (95% intervals, shared ranks, at chance,
  AULC, still improving);
* :mod:`~memtasks.results.markdown`, :mod:`~memtasks.results.cells` and
  :mod:`~memtasks.results.plots`: rendering only;
* :mod:`~memtasks.results.leaderboard` and :mod:`~memtasks.results.comparison`: the two reports.

Importing this package is cheap: the names below load their module on first use, so the
trainer, which needs :mod:`~memtasks.results.store` only, never imports pandas or matplotlib.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "SCHEMA_VERSION": "schema", "RunResult": "schema", "validate_result": "schema",
    "ResultsError": "errors", "RecordError": "errors", "NoRecordsError": "errors",
    "MixedGroupsError": "errors", "OverwriteError": "errors",
    "collect": "store", "export_table": "store", "finished_status": "store", "is_finished": "store",
    "read_result": "store", "run_dir": "store", "write_json_atomic": "store", "write_text_atomic": "store",
    "metric_stats": "aggregate", "summarise": "aggregate",
    "Leaderboard": "leaderboard", "build_leaderboard": "leaderboard", "write_leaderboard": "leaderboard",
    "Comparison": "comparison", "build_comparison": "comparison", "compare": "comparison",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'memtasks.results' has no attribute {name!r}")
    return getattr(importlib.import_module(f"memtasks.results.{_EXPORTS[name]}"), name)
