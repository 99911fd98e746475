"""Benchmarks (not tests): task generation speed and model training throughput.

Both print a table with the machine, versions and thread count in the header and can write
the same as JSON. Timings are medians of repeated runs after warm-up, on one thread unless
asked otherwise.
"""
from __future__ import annotations

import os
import platform
import statistics
import time
from typing import Any, Callable

import torch

import memtasks
from memtasks.tasks import get_task, list_tasks
from memtasks.tasks.limits import check_sample_size


def machine_info(threads: int) -> dict[str, Any]:
    return {
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "memtasks": memtasks.__version__,
        "threads": threads,
        "date": time.strftime("%Y-%m-%d"),
    }


def _timed(fn: Callable[[], Any]) -> float:
    """Seconds one call of ``fn`` takes."""
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _median_time(fn: Callable[[], Any], repeats: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    return statistics.median(_timed(fn) for _ in range(repeats))


def bench_tasks(batch_size: int = 256, repeats: int = 7, tasks: list[str] | None = None) -> list[dict[str, Any]]:
    """Sequences generated per second per task at its training lengths."""
    names = tasks or list_tasks()
    for name in names:  # every size is checked before anything is timed
        check_sample_size(get_task(name), batch_size, None, f"--batch-size {batch_size:,} at {name}'s longest training length")
    rows = []
    for name in names:
        task = get_task(name)
        g = torch.Generator().manual_seed(0)
        # enough batches per timing that the clock resolution does not matter
        n = 20 if name != "dynamic_ngrams" else 4

        def run() -> None:
            for _ in range(n):
                task.sample(batch_size, g)

        t = _median_time(run, repeats, warmup=1)
        rows.append({"task": name, "batch_size": batch_size, "sequences_per_s": round(n * batch_size / t)})
    return rows


def bench_models(
    models: list[str] | None = None,
    batch_size: int = 32,
    repeats: int = 7,
    steps: int = 10,
    device: str = "cpu",
    hparams: dict[str, dict[str, Any]] | None = None,
    reference: bool = True,
) -> list[dict[str, Any]]:
    """Training throughput (forward + backward + optimiser step) on copy, lengths 1–20.

    Two figures per model: lengths drawn per batch from 1–20 (as training does), and the
    fixed longest length 20 (T = 41). ``ratio_to_lstm`` divides by ``lstm`` in the same run.
    Each figure is the median of ``repeats`` timings of ``steps`` training steps after one
    warm-up; the repeats go round robin over the models, so that a slow spell of a shared
    machine falls on every model alike.
    """
    from memtasks.train.config import RunConfig
    from memtasks.train.trainer import make_optimizer
    from memtasks.models import MODELS, build_model, list_models

    task = get_task("copy")
    names = models or [m for m in list_models() if not MODELS.get(m).closed_form]  # no gradient step to time
    if reference and "lstm" not in names:
        names = ["lstm", *names]
    dev = torch.device(device)
    for name in names:  # every size is checked before any model is built on the device
        model = build_model(name, task.d_in, task.d_out, **(hparams or {}).get(name, {}))
        check_sample_size(task, batch_size, 20, f"--batch-size {batch_size:,} with {name} at copy length", model.state_size())
    cases = []
    for name in names:
        model = build_model(name, task.d_in, task.d_out, **(hparams or {}).get(name, {})).to(dev)
        opt = make_optimizer(RunConfig(task="copy", model=name), model)
        g = torch.Generator().manual_seed(0)
        lengths = torch.randint(1, 21, (steps,), generator=g).tolist()
        fixed = [task.sample(batch_size, g, length=20, device=dev) for _ in range(2)]
        varied = [task.sample(batch_size, g, length=n, device=dev) for n in lengths]

        def run(batches: list, model: Any = model, opt: Any = opt) -> Callable[[], None]:
            def go() -> None:
                for i in range(steps):
                    b = batches[i % len(batches)]
                    out, _ = model(b.inputs)
                    loss = task.loss_fn(out, b)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    model.after_optimizer_step()
                if dev.type == "cuda":
                    torch.cuda.synchronize()

            return go

        cases.append((name, model, run(varied), run(fixed)))
    # round robin: every repeat times every model once, so a slow spell of a shared machine
    # falls on all of them alike and the ratios to the in-run reference stay fair
    times: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name, *_ in cases}
    for _, _, go_var, go_fix in cases:  # warm-up
        go_var()
        go_fix()
    for _ in range(repeats):
        for name, _, go_var, go_fix in cases:
            times[name][0].append(_timed(go_var))
            times[name][1].append(_timed(go_fix))
    rows = []
    for name, model, _, _ in cases:
        trainable, _ = model.param_counts()
        t_var, t_fix = (statistics.median(t) for t in times[name])
        rows.append(
            {
                "model": name,
                "params": trainable,
                "seq_per_s_len_1_20": round(steps * batch_size / t_var, 1),
                "seq_per_s_len_20": round(steps * batch_size / t_fix, 1),
            }
        )
    ref = next((r for r in rows if r["model"] == "lstm"), None)
    for r in rows:
        if ref is not None:
            r["ratio_to_lstm"] = round(r["seq_per_s_len_1_20"] / ref["seq_per_s_len_1_20"], 3)
    return rows
