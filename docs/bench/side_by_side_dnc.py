"""memtasks' dnc against pytorch-dnc (PyPI ``dnc`` 1.1.0, ixaxaar), training throughput side by side.

Not part of the package and not a dependency: pytorch-dnc is installed next to the project's
environment, without its dependencies (it would pull an unpinned torch)::

    .venv/bin/pip download --no-deps dnc==1.1.0 -d /tmp/pdnc_dl
    python3 -m zipfile -e /tmp/pdnc_dl/dnc-1.1.0-py3-none-any.whl /tmp/pdnc
    PYTHONPATH=/tmp/pdnc .venv/bin/python docs/bench/side_by_side_dnc.py

Both models: LSTM controller of 100 units, 128 x 20 memory, one read head, one thread, batch 32 on
copy (8 bits), a training step = forward + backward + optimiser step. pytorch-dnc gets a linear layer
from its 9 outputs to the task's 8; ours runs with its default sizes. Both train with RMSProp
(momentum 0.9, lr 1e-3) and gradients clipped to ±10, our dnc's recipe. The same six batches of lengths 5, 20, 14, 1, 4, 20 for both, the two
models timed round robin, median of ``--repeats`` timings of the six steps after one warm-up.
Prints seq/s of each and their ratio.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from memtasks.models import build_model
from memtasks.tasks import get_task


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    from dnc import DNC as PytorchDNC  # pytorch-dnc, see the module docstring

    torch.set_num_threads(1)
    torch.manual_seed(0)
    task = get_task("copy")
    g = torch.Generator().manual_seed(0)
    batches = [task.sample(32, g, length=n) for n in (5, 20, 14, 1, 4, 20)]

    ours = build_model("dnc", task.d_in, task.d_out)
    ours_opt = torch.optim.RMSprop(ours.parameters(), lr=1e-3, momentum=0.9)

    theirs = PytorchDNC(
        input_size=task.d_in, hidden_size=100, rnn_type="lstm", num_layers=1, nr_cells=128, cell_size=20,
        read_heads=1, batch_first=True, gpu_id=-1,
    )  # fmt: skip
    head = nn.Linear(task.d_in, task.d_out)
    params = [*theirs.parameters(), *head.parameters()]
    theirs_opt = torch.optim.RMSprop(params, lr=1e-3, momentum=0.9)

    def step_ours(b) -> None:
        out, _ = ours(b.inputs)
        loss = task.loss_fn(out, b)
        ours_opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_value_(ours.parameters(), 10.0)
        ours_opt.step()

    def step_theirs(b) -> None:
        out, _ = theirs(b.inputs, (None, None, None), reset_experience=True, pass_through_memory=True)
        loss = task.loss_fn(head(out), b)
        theirs_opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_value_(params, 10.0)
        theirs_opt.step()

    def timed(step) -> float:
        t0 = time.perf_counter()
        for b in batches:
            step(b)
        return time.perf_counter() - t0

    timed(step_ours), timed(step_theirs)  # warm-up (and the kernels' build)
    times: dict[str, list[float]] = {"memtasks dnc": [], "pytorch-dnc": []}
    for _ in range(args.repeats):
        times["memtasks dnc"].append(timed(step_ours))
        times["pytorch-dnc"].append(timed(step_theirs))
    seqs = 32 * len(batches)
    rate = {name: seqs / statistics.median(t) for name, t in times.items()}
    for name, r in rate.items():
        print(f"{name:14s} {r:8.1f} seq/s")
    print(f"ratio          {rate['memtasks dnc'] / rate['pytorch-dnc']:8.2f}x")


if __name__ == "__main__":
    main()
