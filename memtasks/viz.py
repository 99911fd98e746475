"""Pictures and text grids of task examples, in the style of the NTM paper's figures."""
from __future__ import annotations

from typing import Any

import torch

from memtasks.tasks.base import Batch


def _steps(batch: Batch, index: int) -> int:
    steps = batch.extras.get("steps")
    return int(steps[index]) if steps is not None else batch.inputs.shape[1]


def text_grid(batch: Batch, index: int = 0, outputs: torch.Tensor | None = None) -> str:
    """One sequence as rows of characters: inputs above targets, scored steps marked ``*``.

    Bits print as ``1``/``.``; other values with one digit after the point.
    """
    T = _steps(batch, index)
    x = batch.inputs[index, :T].cpu()
    y = batch.targets[index, :T].cpu()
    m = batch.mask[index, :T].cpu()

    def cell(v: float) -> str:
        if v == 1.0:
            return "1"
        if v == 0.0:
            return "."
        return f"{v:+.1f}"

    def rows(name: str, t: torch.Tensor) -> list[str]:
        vals = t.tolist()
        width = max(1, max((len(cell(v)) for row in vals for v in row), default=1))
        return [f"{name}{c:<3d}|" + " ".join(cell(row[c]).rjust(width) for row in vals) for c in range(t.shape[1])]

    lines = rows("in ", x) + rows("tgt", y)
    if outputs is not None:
        lines += rows("out", outputs[:T].cpu())
    width = max(len(cell(v)) for v in torch.cat([x.flatten(), y.flatten()]).tolist())
    lines.append("scored|" + " ".join(("*" if b else " ").rjust(width) for b in m.tolist()))
    lines.insert(0, "step  |" + " ".join(str(t % 10).rjust(width) for t in range(T)))
    return "\n".join(lines)


def plot_example(batch: Batch, index: int = 0, outputs: torch.Tensor | None = None, title: str = "") -> Any:
    """A matplotlib Figure: inputs, targets (and outputs) as heat maps over time; scored steps shaded.

    The figure is on the Agg canvas and outside pyplot: no global backend is set, and there is
    nothing to close (it is freed with its last reference).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    T = _steps(batch, index)
    panels = [("inputs", batch.inputs[index, :T]), ("targets", batch.targets[index, :T])]
    if outputs is not None:
        panels.append(("outputs", outputs[:T]))
    mask = batch.mask[index, :T].cpu()
    size = (max(4.0, 0.18 * T + 1.5), 1.2 + 0.9 * len(panels) + 0.08 * sum(p[1].shape[1] for p in panels))
    fig = Figure(figsize=size)
    FigureCanvasAgg(fig)  # headless, without pyplot's global backend
    axes = fig.subplots(len(panels), 1, squeeze=False)
    for ax, (name, data) in zip(axes[:, 0], panels):
        ax.imshow(data.detach().cpu().float().T.numpy(), aspect="auto", cmap="viridis", interpolation="nearest", vmin=min(0.0, float(data.min())), vmax=max(1.0, float(data.max())))
        ax.set_ylabel(name)
        ax.set_yticks([])
        scored = torch.nonzero(mask).flatten().tolist()
        if scored and name != "inputs":
            ax.axvspan(scored[0] - 0.5, scored[-1] + 0.5, color="white", alpha=0.15, lw=0)
    axes[-1, 0].set_xlabel("time step")
    if title:
        axes[0, 0].set_title(title)
    fig.tight_layout()
    return fig
