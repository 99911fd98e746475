"""``memtasks bench`` (generation and training speed) and ``memtasks capacity`` (an ESN's
linear memory capacity)."""
from __future__ import annotations

import argparse
import json
from typing import Any

from memtasks.cli.common import (
    FLOAT32_MAX,
    CLIError,
    Common,
    load_plugins,
    non_negative_int,
    output_file,
    plugin_code,
    positive_float,
    positive_int,
    positive_int_at_most,
    unique,
)

MAX_THREADS = 1024  # as RunConfig.threads
_F32 = " (the reservoir computes in float32)"


def add_commands(sub: Any, common: Common) -> None:
    sp = common.parser(sub, "bench", "benchmark task generation or model training throughput")
    sp.add_argument("what", choices=("tasks", "models"))
    sp.add_argument("--threads", type=positive_int_at_most("--threads", MAX_THREADS), default=1)
    sp.add_argument("--batch-size", type=positive_int("--batch-size"), dest="batch_size",
                    help="(default: 256 for tasks, 32 for models)")
    sp.add_argument("--models", nargs="+", help="bench models: only these models (lstm, the reference, is always timed)")
    sp.add_argument("--tasks", nargs="+", help="bench tasks: only these tasks")
    sp.add_argument("--device", default="cpu", choices=("cpu", "cuda", "mps"), help="bench models: where to train")
    sp.add_argument("--json", metavar="FILE", help="also write the table as JSON")
    sp.set_defaults(func=cmd_bench)

    sp = common.parser(sub, "capacity", "linear short-term memory capacity of a reservoir (Jaeger 2002) against its size")
    sp.add_argument("--sizes", type=positive_int("--sizes"), nargs="+", default=[25, 50, 100, 200, 400], help="reservoir sizes N")
    sp.add_argument("--seeds", type=non_negative_int("--seeds"), nargs="+", default=[0, 1, 2])
    sp.add_argument("--model", default="esn", help="a registered model with reservoir_states()")
    sp.add_argument("--input-range", type=positive_float("--input-range", FLOAT32_MAX, _F32), default=0.5,
                    dest="input_range", help="u(n) ~ U(-a, a)")
    sp.add_argument("--input-scaling", type=positive_float("--input-scaling", FLOAT32_MAX, _F32), default=1.0,
                    dest="input_scaling", help="the reservoir's W_in scale")
    sp.add_argument("--spectral-radius", type=positive_float("--spectral-radius", FLOAT32_MAX, _F32), default=0.95,
                    dest="spectral_radius")
    sp.add_argument("--threads", type=positive_int_at_most("--threads", MAX_THREADS), default=1)
    sp.add_argument("--json", metavar="FILE", help="also write the table and every run as JSON")
    sp.set_defaults(func=cmd_capacity)


def _check_device(name: str) -> None:
    import torch

    available = {"cpu": True, "cuda": torch.cuda.is_available(),
                 "mps": bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())}
    if not available[name]:
        raise CLIError(f"--device {name}: torch sees no {name.upper()} device here; use --device cpu")


def cmd_bench(args: argparse.Namespace) -> int:
    import torch
    from tabulate import tabulate

    from memtasks import bench
    from memtasks.models import MODELS
    from memtasks.tasks import TASKS

    load_plugins(args.plugin)
    out = output_file(args.json, "--json", (".json",)) if args.json is not None else None
    # a flag of the other kind of bench would be ignored: say so instead
    if args.what == "tasks" and args.models is not None:
        raise CLIError("--models applies to `memtasks bench models`; `bench tasks` times task generation (use --tasks)")
    if args.what == "tasks" and args.device != "cpu":
        raise CLIError(f"--device {args.device} applies to `memtasks bench models`; `bench tasks` generates on the CPU")
    if args.what == "models" and args.tasks is not None:
        raise CLIError("--tasks applies to `memtasks bench tasks`; `bench models` trains on copy (use --models)")
    tasks, models = unique("--tasks", args.tasks), unique("--models", args.models)
    for name in models or ():
        MODELS.get(name)
    for name in tasks or ():
        TASKS.get(name)
    _check_device(args.device)
    if args.what == "tasks":  # a plugin task that cannot sample is named before anything is timed
        for name in tasks or TASKS.names():
            with plugin_code(TASKS.get(name), f"task {name!r}: sampling"):
                bench.get_task(name).sample(1, torch.Generator().manual_seed(0))
    else:
        for name in models or ():  # one small training step: a plugin model that breaks is named before timing
            with plugin_code(MODELS.get(name), f"model {name!r}: one training step"):
                _one_training_step(name)
    torch.set_num_threads(args.threads)
    info = bench.machine_info(args.threads)
    if args.what == "tasks":
        rows = bench.bench_tasks(batch_size=args.batch_size or 256, tasks=tasks)
    else:
        rows = bench.bench_models(models=models, batch_size=args.batch_size or 32, device=args.device)
    print(" ".join(f"{k}={v}" for k, v in info.items()))
    print(tabulate(rows, headers="keys", tablefmt="github"))
    if out is not None:
        out.write_text(json.dumps({"info": info, "rows": rows}, indent=2) + "\n")
        print(f"wrote {out}")
    return 0


def cmd_capacity(args: argparse.Namespace) -> int:
    import statistics

    import torch
    from tabulate import tabulate

    from memtasks.capacity import memory_capacity
    from memtasks.models import MODELS

    load_plugins(args.plugin)
    out = output_file(args.json, "--json", (".json",)) if args.json is not None else None
    cls = MODELS.get(args.model)
    if not callable(getattr(cls, "reservoir_states", None)):
        raise CLIError(
            f"--model {args.model}: has no reservoir (no reservoir_states() method); "
            "memory capacity is measured on reservoir models such as esn"
        )
    from memtasks.core.limits import GIB, memory_limit_bytes

    for n in args.sizes:  # W (N, N) in float64 and its eigen-decomposition: a few N x N copies
        if 4 * 8 * n * n > memory_limit_bytes():
            raise CLIError(
                f"--sizes {n}: a reservoir of {n:,} units needs about {32 * n * n / GIB:,.1f} GiB, over the limit of "
                f"{memory_limit_bytes() / GIB:,.1f} GiB (half of this machine's memory)"
            )
    torch.set_num_threads(args.threads)
    hparams = {"input_scaling": args.input_scaling, "spectral_radius": args.spectral_radius}
    sizes = unique("--sizes", args.sizes)
    seeds = unique("--seeds", args.seeds)
    with plugin_code(cls, f"model {args.model!r}: measuring its memory capacity"):
        runs = [
            memory_capacity(n, seed=s, model=args.model, input_range=args.input_range, **hparams)
            for n in sizes
            for s in seeds
        ]
    table = []
    for n in sizes:
        mc = [r["memory_capacity"] for r in runs if r["reservoir_size"] == n]
        table.append(
            {
                "reservoir_size": n,
                "seeds": len(mc),
                "memory_capacity": round(statistics.mean(mc), 2),
                "std": round(statistics.stdev(mc), 2) if len(mc) > 1 else 0.0,
                "capacity_per_unit": round(statistics.mean(mc) / n, 3),
                "bound_holds": all(v <= n for v in mc),
            }
        )
    print(f"model={args.model} input=U(-{args.input_range}, {args.input_range}) " + " ".join(f"{k}={v}" for k, v in hparams.items()))
    print(tabulate(table, headers="keys", tablefmt="github"))
    if out is not None:
        from memtasks.bench import machine_info

        doc = {"info": machine_info(args.threads), "hparams": hparams, "table": table, "runs": runs}
        out.write_text(json.dumps(doc, indent=2) + "\n")
        print(f"wrote {out}")
    return 0


def _one_training_step(name: str) -> None:
    """One small training step of ``name`` on copy. In a function of its own, so that its output and
    graph are gone when it returns: a kept graph keeps its model's buffers leased (models/arena.py),
    and with the DNC's that made every timed step of `bench models --models dnc` allocate afresh."""
    import torch

    from memtasks.models import build_model
    from memtasks.tasks import get_task

    copy = get_task("copy")
    model = build_model(name, copy.d_in, copy.d_out)
    batch = copy.sample(2, torch.Generator().manual_seed(0), length=2)
    y, _ = model(batch.inputs)
    copy.loss_fn(y, batch).backward()
