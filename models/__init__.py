"""The model zoo. Importing this package registers every built-in model family."""
from memtasks.models.base import MODELS, MemoryModel, build_model, list_models, model_config, register_model

from memtasks.models import (  # noqa: F401  (imported to register)
    dnc,
    esn,
    gru_variants,
    indrnn,
    ntm,
    recurrent,
)

__all__ = ["MODELS", "MemoryModel", "build_model", "list_models", "model_config", "register_model"]
