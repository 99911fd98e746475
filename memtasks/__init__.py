"""memtasks: algorithmic memory tasks and a model zoo to benchmark on them."""
from memtasks.tasks import TASKS, Batch, Task, get_task, list_tasks, register_task

__version__ = "0.1.0"

__all__ = ["TASKS", "Batch", "Task", "get_task", "list_tasks", "register_task", "__version__"]
