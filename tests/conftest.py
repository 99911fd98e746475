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
