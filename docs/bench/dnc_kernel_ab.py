"""Two builds of the DNC's C kernels in one process, timed in turn on the same training steps.

For changes to ``models/dnc/kernel.c`` that keep its interface (the structs of ``cpu_kernel.py``):
the two sources are built as two libraries, loaded side by side, and the model's training step
(copy, batch 32, one thread; forward + backward + optimiser) alternates between them in blocks of
10 steps, lengths 1-20 as ``memtasks bench models`` draws them and the fixed length 20, so that a
slow spell of a shared machine falls on both alike. Prints the median time per step of each, with
the C forward's and backward's share, and B's paired ratio to A::

    git show HEAD~1:models/dnc/kernel.c > /tmp/a.c
    .venv/bin/python docs/bench/dnc_kernel_ab.py /tmp/a.c models/dnc/kernel.c --rounds 9

``--checkpoint-a K`` / ``--checkpoint-b K`` run a build with another checkpoint interval of the link
matrices and memories than ``sequence.CHECKPOINT`` (a kernel.c of another commit may have been tuned
for another one; the same file twice with two intervals compares the intervals).
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

import torch

import memtasks.models.dnc.model as dnc_model
import memtasks.models.dnc.sequence as dnc_sequence
from memtasks.models import build_model
from memtasks.models.cbuild import HEADER, KernelLibrary, read_source
from memtasks.models.dnc import cpu_kernel
from memtasks.tasks import get_task
from memtasks.train.config import RunConfig
from memtasks.train.trainer import make_optimizer


class _SourceLibrary(KernelLibrary):
    """The DNC's library, built from another kernel.c (same interface)."""

    def __init__(self, tag: str, path: Path) -> None:
        base = cpu_kernel.LIBRARY
        super().__init__(f"{base.name}_{tag}", base.source, base.kernels, base.model, base.queries, base.structs,
                         base.defines, base.flags)  # fmt: skip
        self.path = path

    def sources(self) -> dict[str, str]:
        return {"kernel.c": self.path.read_text(), HEADER: read_source(HEADER)}


class _Timed:
    """The library in use, with the sequence kernels' time added up."""

    def __init__(self) -> None:
        self.lib: Any = None
        self.spent = {"forward": 0.0, "backward": 0.0}

    def __getattr__(self, name: str) -> Any:
        fn = getattr(self.lib, name)
        if not name.startswith("dnc_sequence_"):
            return fn
        key = name.removeprefix("dnc_sequence_")

        def timed(*args: Any) -> Any:
            t0 = time.perf_counter()
            out = fn(*args)
            self.spent[key] += time.perf_counter() - t0
            return out

        return timed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", type=Path)
    ap.add_argument("b", type=Path)
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--checkpoint-a", type=int, default=dnc_sequence.CHECKPOINT)
    ap.add_argument("--checkpoint-b", type=int, default=dnc_sequence.CHECKPOINT)
    args = ap.parse_args()
    checkpoints = (args.checkpoint_a, args.checkpoint_b)
    torch.set_num_threads(1)
    libs = [_SourceLibrary(tag, path).load() for tag, path in (("a", args.a), ("b", args.b))]
    if None in libs:
        raise SystemExit("a kernel did not build (see the warning above)")
    timed = _Timed()
    dnc_model.kernel_for = lambda x, use: timed  # every DNC forward of this process uses the library in turn

    task = get_task("copy")
    torch.manual_seed(0)
    model = build_model("dnc", task.d_in, task.d_out)
    opt = make_optimizer(RunConfig(task="copy", model="dnc"), model)
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(1, 21, (10,), generator=g).tolist()
    cases = {
        "lengths 1-20": [task.sample(32, g, length=n) for n in lengths],
        "length 20": [task.sample(32, g, length=20) for _ in range(2)] * 5,
    }

    def block(batches: list[Any]) -> tuple[float, float, float]:
        timed.spent = {"forward": 0.0, "backward": 0.0}
        t0 = time.perf_counter()
        for b in batches:
            out, _ = model(b.inputs)
            loss = task.loss_fn(out, b)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        per = 1000 / len(batches)
        return (time.perf_counter() - t0) * per, timed.spent["forward"] * per, timed.spent["backward"] * per

    for lib, k in zip(libs, checkpoints):  # warm-up
        timed.lib, dnc_sequence.CHECKPOINT = lib, k
        for batches in cases.values():
            block(batches)
    for name, batches in cases.items():
        res: list[list[tuple[float, float, float]]] = [[], []]
        for r in range(args.rounds):
            for i in (0, 1) if r % 2 == 0 else (1, 0):
                timed.lib, dnc_sequence.CHECKPOINT = libs[i], checkpoints[i]
                res[i].append(block(batches))
        for i, path in enumerate((args.a, args.b)):
            med = [statistics.median(x[j] for x in res[i]) for j in range(3)]
            print(f"{name:12s} {'AB'[i]} {path.name:16s} K={checkpoints[i]} ms/step {med[0]:6.2f}  "
                  f"C forward {med[1]:5.2f}  C backward {med[2]:5.2f}")
        ratio = statistics.median(b[0] / a[0] for a, b in zip(res[0], res[1]))
        print(f"{name:12s} B/A paired median {ratio:.3f}")


if __name__ == "__main__":
    main()
