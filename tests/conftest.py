import os

import pytest
import torch

# Tests never touch the network or a W&B account; the one W&B test sets its own mode.
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("WANDB_SILENT", "true")


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)
    yield


# The README's example plugin gets the whole model contract suite, as any plugin would.
def pytest_configure(config):
    from pathlib import Path

    from memtasks.core.registry import load_plugin

    load_plugin(str(Path(__file__).resolve().parents[1] / "examples" / "my_model.py"))
