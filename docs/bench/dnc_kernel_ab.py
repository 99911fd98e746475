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

``--check`` first compares the two builds' numbers: the outputs, the final state and every gradient
(parameters and initial state) of one forward and backward, bit for bit, at several sizes (N a
multiple of 16 and not, one and two read heads, odd batches, T = 1), from the zero state and from a
given one, at checkpoint intervals 1, 3, 8 and the default; it prints each case that differs with its
largest difference, then how many are the same. ``--check --rounds 0`` compares and times nothing
(exit status 1 when a case differs).
What "the same numbers bit for bit" claims for a change of ``kernel.c`` is this check.
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


CHECK_CONFIGS = (
    {},
    {"memory_slots": 16},
    {"memory_slots": 24, "hidden_size": 20},
    {"memory_slots": 32, "read_heads": 2, "memory_width": 8},
)
# (batch, T, an initial state given with gradients wanted, else the zero state the kernels start from)
CHECK_SHAPES = ((32, 41, False), (5, 13, True), (3, 1, False), (2, 7, True))


def check(libs: list[Any], timed: _Timed) -> int:
    """Cases where the builds' outputs, final state or gradients differ in any bit (printed)."""
    differ = 0
    default_k = dnc_sequence.CHECKPOINT
    intervals = sorted({1, 3, default_k, 8})
    for cfg in CHECK_CONFIGS:
        for k in intervals:
            dnc_sequence.CHECKPOINT = k
            for batch, steps, given in CHECK_SHAPES:
                results = []
                for lib in libs:
                    timed.lib = lib
                    torch.manual_seed(0)
                    model = build_model("dnc", 9, 8, **cfg)
                    g = torch.Generator().manual_seed(1)
                    state = [s.requires_grad_() for s in model.initial_state(batch)] if given else []
                    y, final = model(torch.rand(batch, steps, 9, generator=g), state or None)
                    loss = (y * torch.rand(y.shape, generator=g)).sum()
                    loss = loss + sum((s * torch.rand(s.shape, generator=g)).sum() for s in final)
                    loss.backward()
                    results.append([y, *final, *(p.grad for p in model.parameters()), *(s.grad for s in state)])
                same = all(torch.equal(a, b) for a, b in zip(*results))
                if not same:
                    differ += 1
                    gap = max((a - b).abs().max().item() for a, b in zip(*results))
                    start = "a given" if given else "the zero"
                    case = f"{cfg or 'defaults'} K={k} batch {batch} T={steps} from {start} state"
                    print(f"differ: {case}: largest difference {gap:.3g}")
    dnc_sequence.CHECKPOINT = default_k
    cases = len(CHECK_CONFIGS) * len(intervals) * len(CHECK_SHAPES)
    print(f"check: {cases - differ} of {cases} cases the same bit for bit")
    return differ


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", type=Path)
    ap.add_argument("b", type=Path)
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--checkpoint-a", type=int, default=dnc_sequence.CHECKPOINT)
    ap.add_argument("--checkpoint-b", type=int, default=dnc_sequence.CHECKPOINT)
    ap.add_argument("--check", action="store_true", help="first compare the builds' numbers bit for bit")
    args = ap.parse_args()
    checkpoints = (args.checkpoint_a, args.checkpoint_b)
    torch.set_num_threads(1)
    libs = [_SourceLibrary(tag, path).load() for tag, path in (("a", args.a), ("b", args.b))]
    if None in libs:
        raise SystemExit("a kernel did not build (see the warning above)")
    timed = _Timed()
    dnc_model.kernel_for = lambda x, use: timed  # every DNC forward of this process uses the library in turn
    differ = check(libs, timed) if args.check else 0
    if args.rounds < 1:  # --check --rounds 0: the comparison alone, exit status 1 when any case differs
        raise SystemExit(1 if differ else 0)

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
