"""The small core that tasks, models and training all build on: the plug-in ``Registry``,
the frozen-config helpers and stable seeds. It imports nothing else of memtasks (and not torch)."""
