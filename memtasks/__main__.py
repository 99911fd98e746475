"""``python -m memtasks``: the same as the ``memtasks`` command."""
import sys

from memtasks.cli import main

sys.exit(main())
