"""The Neural Turing Machine (Graves et al. 2014), registered as ``ntm``.

``memory``: addressing, read and write as pure batched functions (the reference equations);
``vjp``: their hand-derived backward passes; ``controller``: the LSTM / feedforward cell;
``sequence``: the fused time loop; ``bptt``: its backward pass through time; ``model``: the
registered model, its config and state.
"""
from memtasks.models.ntm.model import NTM, NTMConfig, NTMState

__all__ = ["NTM", "NTMConfig", "NTMState"]
