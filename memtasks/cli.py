"""The ``memtasks`` command line: the only place that prints."""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from tabulate import tabulate


class CLIError(Exception):
    """An error to report in one line, with exit status 2."""


def _plugins(names: Sequence[str] | None) -> None:
    from memtasks.core.registry import load_plugin

    for spec in names or ():
        load_plugin(spec)


# --- tasks / show -----------------------------------------------------------------------
def cmd_tasks(args: argparse.Namespace) -> int:
    from memtasks.tasks import get_task, list_tasks

    _plugins(args.plugin)
    for name in list_tasks():
        print(get_task(name).describe())
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    import torch

    from memtasks.tasks import get_task
    from memtasks.viz import plot_example, text_grid

    _plugins(args.plugin)
    task = get_task(args.task)
    batch = task.sample(1, torch.Generator().manual_seed(args.seed), length=args.length)
    length = int(batch.lengths[0])
    print(f"{task.name} (length {length}, seed {args.seed}); d_in={task.d_in} d_out={task.d_out} loss={task.loss}")
    print(text_grid(batch, 0))
    if args.png:
        fig = plot_example(batch, 0, title=f"{task.name}, length {length}")
        fig.savefig(args.png, dpi=120)
        print(f"wrote {args.png}")
    return 0


# --- train -------------------------------------------------------------------------------
class _ProgressPrinter:
    """tqdm bar on a terminal; otherwise a plain line every ``interval`` seconds."""

    def __init__(self, total: int, label: str, interval: float = 10.0) -> None:
        self.tty = sys.stderr.isatty()
        self.interval = interval
        self.last = 0.0
        self.label = label
        self.bar = None
        if self.tty:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="seq", desc=label, dynamic_ncols=True)

    def __call__(self, info: dict[str, Any]) -> None:
        if info.get("event") == "eval":
            train = info["metrics"]["train"]
            msg = " ".join(f"{k}={v:.4g}" for k, v in train.items())
            self._line(f"eval @ {info['sequences']:,} seq: {msg}")
            return
        if self.bar is not None:
            self.bar.n = info["sequences"]
            post = {"loss": f"{info['loss']:.4f}", "seq/s": f"{info['rate']:.0f}"}
            if info.get("bit_errors") is not None:
                post["bit_err"] = f"{info['bit_errors']:.3f}"
            self.bar.set_postfix(post, refresh=False)
            self.bar.refresh()
            return
        if time.monotonic() - self.last >= self.interval:
            self.last = time.monotonic()
            eta = f"{info['eta_s']:.0f}s" if info.get("eta_s") is not None else "?"
            be = f" bit_errors={info['bit_errors']:.3f}" if info.get("bit_errors") is not None else ""
            print(
                f"{self.label}: {info['sequences']:,}/{info['total']:,} seq loss={info['loss']:.4f}{be} "
                f"{info['rate']:.0f} seq/s eta {eta}",
                file=sys.stderr,
                flush=True,
            )

    def _line(self, msg: str) -> None:
        if self.bar is not None:
            self.bar.write(f"{self.label}: {msg}", file=sys.stderr)
        else:
            print(f"{self.label}: {msg}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def build_run_config(args: argparse.Namespace) -> Any:
    from memtasks.train.config import RunConfig

    base: dict[str, Any] = {"task": args.task, "model": args.model, "seed": args.seed}
    for key in ("sequences", "batch_size", "param_budget", "device", "group"):
        value = getattr(args, key, None)
        if value is not None:
            base[key] = value
    return RunConfig(**base).with_sets(args.set or [])


def cmd_train(args: argparse.Namespace) -> int:
    from memtasks.train.trainer import train

    _plugins(args.plugin)
    config = build_run_config(args)
    label = f"{config.task}/{config.model}/seed-{config.seed}"
    printer = _ProgressPrinter(config.sequences, label) if not args.quiet else None
    try:
        result = train(config, args.runs_dir, force=args.force, wandb_mode=args.wandb, progress=printer)
    finally:
        if printer is not None:
            printer.close()
    print(format_result(result))
    return 0 if result["status"] == "ok" else 1


def format_result(result: dict[str, Any]) -> str:
    rows = [[label, *(f"{v:.4g}" for v in m.values())] for label, m in (result.get("final") or {}).items()]
    headers = ["length", *next(iter((result.get("final") or {"": {}}).values()), {}).keys()]
    head = (
        f"{result['task']}/{result['model']}/seed-{result['seed']}: status={result['status']} "
        f"sequences={result['sequences_seen']:,} solved_at={result['sequences_to_solve']} "
        f"params={result['trainable_params']:,} {result['throughput']:.0f} seq/s wall={result['wall_time_s']:.1f}s"
    )
    if result.get("error"):
        head += f"\nerror: {result['error'].splitlines()[0]}"
    return head + ("\n" + tabulate(rows, headers=headers) if rows else "")


# --- bench -------------------------------------------------------------------------------
def cmd_bench(args: argparse.Namespace) -> int:
    import torch

    from memtasks import bench

    _plugins(args.plugin)
    torch.set_num_threads(args.threads)
    info = bench.machine_info(args.threads)
    if args.what == "tasks":
        rows = bench.bench_tasks(batch_size=args.batch_size or 256, tasks=args.tasks)
    else:
        rows = bench.bench_models(models=args.models, batch_size=args.batch_size or 32, device=args.device)
    print(" ".join(f"{k}={v}" for k, v in info.items()))
    print(tabulate(rows, headers="keys", tablefmt="github"))
    if args.json:
        Path(args.json).write_text(json.dumps({"info": info, "rows": rows}, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


# --- capacity ----------------------------------------------------------------------------
def cmd_capacity(args: argparse.Namespace) -> int:
    import statistics

    import torch

    from memtasks.capacity import memory_capacity

    _plugins(args.plugin)
    torch.set_num_threads(args.threads)
    hparams = {"input_scaling": args.input_scaling, "spectral_radius": args.spectral_radius}
    runs = [
        memory_capacity(n, seed=s, model=args.model, input_range=args.input_range, **hparams)
        for n in args.sizes
        for s in args.seeds
    ]
    table = []
    for n in args.sizes:
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
    if args.json:
        from memtasks.bench import machine_info

        doc = {"info": machine_info(args.threads), "hparams": hparams, "table": table, "runs": runs}
        Path(args.json).write_text(json.dumps(doc, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


# --- parser ------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="memtasks", description="Benchmark memory in recurrent and memory-augmented networks.")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)

    def plugin_arg(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--plugin", action="append", metavar="FILE_OR_MODULE", help="import a plugin that registers models or tasks (repeatable)")

    sp = sub.add_parser("tasks", help="list the registered tasks")
    plugin_arg(sp)
    sp.set_defaults(func=cmd_tasks)

    sp = sub.add_parser("show", help="print one example of a task (and draw it with --png)")
    sp.add_argument("task")
    sp.add_argument("--length", type=int, default=None, help="fix the task's length parameter")
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--png", metavar="FILE", help="also write the example as a picture")
    plugin_arg(sp)
    sp.set_defaults(func=cmd_show)

    sp = sub.add_parser("train", help="train one task x model x seed and write its run record")
    sp.add_argument("--task", required=True)
    sp.add_argument("--model", required=True)
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--sequences", type=int, help="training budget in sequences")
    sp.add_argument("--batch-size", type=int, dest="batch_size")
    sp.add_argument("--param-budget", type=int, dest="param_budget", help="size the model to this many trainable parameters")
    sp.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"))
    sp.add_argument("--group", help="runs/<group>/... (default: default)")
    sp.add_argument("--set", action="append", metavar="KEY=VALUE", help="RunConfig field, task.<param> or model.<param> (repeatable)")
    sp.add_argument("--runs-dir", default="runs", dest="runs_dir")
    sp.add_argument("--wandb", choices=("offline", "online", "disabled"), help="W&B mode (default: $WANDB_MODE or offline)")
    sp.add_argument("--force", action="store_true", help="re-run even if a finished result exists")
    sp.add_argument("--quiet", action="store_true", help="no progress output")
    plugin_arg(sp)
    sp.set_defaults(func=cmd_train)

    sp = sub.add_parser("bench", help="benchmark task generation or model training throughput")
    sp.add_argument("what", choices=("tasks", "models"))
    sp.add_argument("--threads", type=int, default=1)
    sp.add_argument("--batch-size", type=int, dest="batch_size")
    sp.add_argument("--models", nargs="+")
    sp.add_argument("--tasks", nargs="+")
    sp.add_argument("--device", default="cpu")
    sp.add_argument("--json", metavar="FILE", help="also write the table as JSON")
    plugin_arg(sp)
    sp.set_defaults(func=cmd_bench)

    sp = sub.add_parser("capacity", help="linear short-term memory capacity of a reservoir (Jaeger 2002) against its size")
    sp.add_argument("--sizes", type=int, nargs="+", default=[25, 50, 100, 200, 400], help="reservoir sizes N")
    sp.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    sp.add_argument("--model", default="esn", help="a registered model with reservoir_states() (default: esn)")
    sp.add_argument("--input-range", type=float, default=0.5, dest="input_range", help="u(n) ~ U(-a, a)")
    sp.add_argument("--input-scaling", type=float, default=1.0, dest="input_scaling", help="the reservoir's W_in scale")
    sp.add_argument("--spectral-radius", type=float, default=0.95, dest="spectral_radius")
    sp.add_argument("--threads", type=int, default=1)
    sp.add_argument("--json", metavar="FILE", help="also write the table and every run as JSON")
    plugin_arg(sp)
    sp.set_defaults(func=cmd_capacity)

    try:
        from memtasks.matrix.cli import add_commands
    except ImportError:  # the matrix commands arrive with memtasks.matrix
        pass
    else:
        add_commands(sub, plugin_arg)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from memtasks.core.config import ConfigError
    from memtasks.core.registry import RegistryError
    from memtasks.train.record import RecordError
    from memtasks.train.trainer import RunError

    try:
        return args.func(args)
    except (CLIError, RegistryError, RunError, RecordError, ConfigError) as exc:
        print(f"memtasks: error: {exc}", file=sys.stderr)
        return 2
    except (TypeError, ValueError) as exc:
        # configuration errors from validation carry a message naming the field
        print(f"memtasks: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("memtasks: interrupted; finished runs are kept and unfinished ones resume from their checkpoints", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
