"""Draw what a trained model's memory did on one sequence, in the layout of the NTM paper's
figures: inputs, targets and outputs over time, and below them every array the model's
``trace`` returns (models without one are drawn with the first three panels only).

Figures are :class:`matplotlib.figure.Figure` objects on the Agg canvas; pyplot is never used.
"""
from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any, Mapping

import torch

from memtasks.core.config import ConfigError
from memtasks.core.errors import MemtasksError
from memtasks.inspect import TRACE_STATE_FACTOR, InspectError
from memtasks.tasks.base import Batch, Task
from memtasks.tasks.limits import check_sample_size

if TYPE_CHECKING:
    from memtasks.inspect import TrainedRun


def example_batch(
    task: Task,
    length: int | None = None,
    seed: int = 0,
    overrides: Mapping[str, Any] | None = None,
    state_floats: int = 0,
) -> Batch:
    """One sequence of ``task`` at ``length`` (None: drawn from the training range), drawn with
    ``seed`` exactly as ``memtasks show`` draws it; refused (``ConfigError``) when it and a
    model's trace over it would not fit in memory."""
    if length is not None:
        check_sample_size(task, 1, length, "--length", TRACE_STATE_FACTOR * state_floats)
    try:
        return task.sample(1, torch.Generator().manual_seed(seed), length=length, **dict(overrides or {}))
    except MemtasksError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"task {task.name!r}: {exc}") from None


def trace(model: torch.nn.Module, inputs: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``(y, arrays)`` of ``model`` on ``inputs`` ``(B, T, d_in)``, without gradients: its
    ``trace`` if it has one (see ``models.base``), else its ``forward`` and no arrays. Each array
    is checked to be ``(B, T, ...)``; the arrays come back as float32 on the CPU."""
    name = getattr(model, "registry_name", type(model).__name__)
    model.eval()
    with torch.no_grad():
        if callable(getattr(model, "trace", None)):
            y, _, arrays = model.trace(inputs)
        else:
            y, _ = model(inputs)
            arrays = {}
    if not isinstance(arrays, dict):
        raise InspectError(f"model {name!r}: trace() must return (y, state, dict of arrays), got a {type(arrays).__name__}")
    lead = tuple(inputs.shape[:2])
    out: dict[str, torch.Tensor] = {}
    for key, value in arrays.items():
        if not isinstance(value, torch.Tensor) or tuple(value.shape[:2]) != lead:
            got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise InspectError(f"model {name!r}: trace array {key!r} must have shape (B, T, ...) = {lead + ('...',)}, got {got}")
        out[str(key)] = value.detach().float().cpu()
    return y.detach().float().cpu(), out


ROW_LABELS = {"read_modes": ("backward", "content", "forward")}  # the DNC's π_t
MIN_PANEL_IN, MAX_PANEL_IN, ROW_IN = 0.55, 2.0, 0.03  # panel heights in inches: a floor, a ceiling, per row


def _panels(name: str, value: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
    """One array of one sequence, ``(T, ...)``, as heat-map panels ``(T, rows)``: a third axis
    (heads, layers) becomes one panel per index."""
    if value.dim() == 1:
        return [(name, value.unsqueeze(1))]
    if value.dim() == 2:
        return [(name, value)]
    value = value.flatten(2)  # (T, K, rows)
    if value.shape[1] == 1:
        return [(name, value[:, 0])]
    return [(f"{name} [{k}]", value[:, k]) for k in range(value.shape[1])]


MIN_LOCATIONS = 8  # an array over fewer rows (modes, gates) is not a weighting over memory locations


def focus_paths(arrays: Mapping[str, torch.Tensor], seq: int = 0, max_runs: int = 20, max_counts: int = 4) -> list[str]:
    """Where each head's weighting over memory locations goes, step by step, as text: for every
    traced array that is a weighting (non-negative, each step's row summing to at most 1, over at
    least ``MIN_LOCATIONS`` locations: the NTM's and DNC's write and read weightings, the DNC's
    allocation), the peak location's move from each step to the next, wrapped to the shortest
    signed distance on the ring of N locations: how often each move occurs (the ``max_counts``
    most common), then the moves in order, run-length encoded (the first ``max_runs`` runs).

    A head that writes to or reads from consecutive locations moves +1 at every step; a read head
    that drifts shows where: e.g. ``t0-100: +0 | t100-144: +1 | t144: +0 | ...`` says it moved one
    location per step from step 100 to 144, then stayed put once.
    """
    lines = []
    for name, value in arrays.items():
        for label, rows in _panels(name, value[seq]):
            if rows.dim() != 2 or rows.shape[1] < MIN_LOCATIONS or rows.shape[0] < 2:
                continue
            if bool((rows < 0).any()) or bool((rows.sum(1) > 1 + 1e-4).any()):
                continue
            n = rows.shape[1]
            peak = rows.argmax(1)
            moves = [((int(b) - int(a) + n // 2) % n) - n // 2 for a, b in zip(peak[:-1], peak[1:])]
            runs: list[tuple[int, int, int]] = []  # (move, first step, last step + 1)
            for t, m in enumerate(moves):
                if runs and runs[-1][0] == m:
                    runs[-1] = (m, runs[-1][1], t + 2)
                else:
                    runs.append((m, t, t + 2))
            shown = [f"t{a}-{b - 1}: {m:+d}" if b - a > 2 else f"t{a}: {m:+d}" for m, a, b in runs[:max_runs]]
            more = f" | ... {len(runs) - max_runs} more" if len(runs) > max_runs else ""
            tally = Counter(moves)  # insertion order = first occurrence, so ties keep it
            ordered = sorted(tally, key=lambda m: -tally[m])
            counts = ", ".join(f"{m:+d} x{tally[m]}" for m in ordered[:max_counts])
            if len(ordered) > max_counts:
                counts += f", {len(ordered) - max_counts} other moves x{sum(tally[m] for m in ordered[max_counts:])}"
            lines.append(f"{label}: peak moves {counts}; " + " | ".join(shown) + more)
    return lines


def inspect_figure(
    model: torch.nn.Module,
    task: Task,
    batch: Batch,
    index: int = 0,
    title: str = "",
    traced: tuple[torch.Tensor, dict[str, torch.Tensor]] | None = None,
) -> Any:
    """A figure of sequence ``index`` of ``batch``: inputs, targets and outputs (probabilities
    for bce tasks) over time, then one panel per array of the model's trace, time on the x axis
    of every panel. Scored steps are outlined on the targets and outputs; the title ends with
    the sequence's scores (bit errors and cost, or MSE). ``traced``: :func:`trace` of the model
    on that one sequence, when the caller has it already."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    steps = batch.extras.get("steps")
    T = int(steps[index]) if steps is not None else batch.inputs.shape[1]
    device = next((p.device for p in model.parameters()), batch.inputs.device)
    one = Batch(*(t[index : index + 1, :T].to(device) for t in (batch.inputs, batch.targets, batch.mask)),
                batch.lengths[index : index + 1].to(device), {k: v[index : index + 1].to(device) for k, v in batch.extras.items()})
    y, arrays = traced if traced is not None else trace(model, one.inputs)
    one = one.to("cpu")
    scores = task.metrics(y, one)
    shown = ", ".join(f"{k.replace('_', ' ')} {v:.3g}" for k, v in scores.items() if k in ("bit_errors", "cost", "mse"))
    outputs = torch.sigmoid(y[0]) if task.loss == "bce" else y[0]
    panels = [("inputs", one.inputs[0].float()), ("targets", one.targets[0].float()), ("outputs", outputs)]
    for key, value in arrays.items():
        panels += _panels(key, value[0])
    heights = [min(MAX_PANEL_IN, max(MIN_PANEL_IN, 0.25 + ROW_IN * p.shape[1])) for _, p in panels]
    width = min(24.0, max(7.0, 2.5 + 0.07 * T))
    fig = Figure(figsize=(width, sum(heights) + 0.3 * len(panels) + 0.8), layout="constrained")
    FigureCanvasAgg(fig)  # headless, without pyplot's global backend
    axes = fig.subplots(len(panels), 1, sharex=True, gridspec_kw={"height_ratios": heights}, squeeze=False)[:, 0]
    scored = torch.nonzero(one.mask[0]).flatten().tolist()
    for ax, (name, data) in zip(axes, panels):
        _heat(fig, ax, name, data, bits=name in ("inputs", "targets", "outputs"))
        if scored and name in ("targets", "outputs"):
            ax.axvspan(scored[0] - 0.5, scored[-1] + 0.5, fill=False, edgecolor="white", lw=1.0)
    axes[-1].set_xlabel("time step")
    axes[-1].xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle("; ".join(part for part in (title, shown) if part), fontsize=10)
    return fig


def _heat(fig: Any, ax: Any, name: str, data: torch.Tensor, bits: bool) -> None:
    import numpy as np

    values = data.T.numpy()  # (rows, T): rows on the y axis, time on the x axis
    finite = values[np.isfinite(values)]  # a diverged run's weights may give inf or NaN: drawn blank
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if bits:
        cmap, vmin, vmax = "viridis", min(0.0, lo), max(1.0, hi)
    elif lo < 0:  # signed: a diverging map centred on 0
        edge = max(abs(lo), abs(hi), 1e-12)
        cmap, vmin, vmax = "RdBu_r", -edge, edge
    else:  # weightings, usages, gates: 0 is dark
        cmap, vmin, vmax = "magma", 0.0, max(hi, 1e-12)
    image = ax.imshow(values, aspect="auto", cmap=cmap, interpolation="nearest", vmin=vmin, vmax=vmax, origin="upper")
    ax.set_title(name.replace("_", " "), loc="left", fontsize=9, pad=2)
    rows = values.shape[0]
    labels = ROW_LABELS.get(name.split(" [")[0])
    if labels is not None and len(labels) == rows:
        ax.set_yticks(range(rows), labels, fontsize=7)
    elif rows <= 1:
        ax.set_yticks([])
    else:
        ax.set_yticks([0, rows - 1], ["0", str(rows - 1)], fontsize=7)
    fig.colorbar(image, ax=ax, fraction=0.015, pad=0.005, aspect=8).ax.tick_params(labelsize=6)


def figure_title(run: TrainedRun, batch: Batch, seed: int, overrides: Mapping[str, Any] | None = None) -> str:
    """``copy/ntm/seed-0: length 20 (sequence seed 3)``: what a figure of ``run`` shows."""
    extra = "".join(f", {k}={v}" for k, v in sorted((overrides or {}).items()))
    changed = "".join(f", {k}={v}" for k, v in sorted(run.task_params.items()))
    return f"{run.name}: length {int(batch.lengths[0])}{extra}{changed} (sequence seed {seed})"
