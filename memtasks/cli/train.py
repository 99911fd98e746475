"""``memtasks train``: one run, with progress on stderr and its result on stdout."""
from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from memtasks.cli.common import Common, load_plugins, non_negative_int, positive_int

EXIT_FAILED = 1


def add_commands(sub: Any, common: Common) -> None:
    sp = common.parser(sub, "train", "train one task x model x seed and write its run record")
    sp.add_argument("--task", required=True)
    sp.add_argument("--model", required=True)
    sp.add_argument("--seed", type=non_negative_int("--seed"), help="(default 0)")
    sp.add_argument("--sequences", type=non_negative_int("--sequences"), help="training budget in sequences (default 200,000)")
    sp.add_argument("--batch-size", type=positive_int("--batch-size"), dest="batch_size", help="(default 32)")
    sp.add_argument("--param-budget", type=positive_int("--param-budget"), dest="param_budget",
                    help="size the model to this many trainable parameters")
    sp.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), help="(default auto)")
    sp.add_argument("--group", help="runs/<group>/... (default: default)")
    sp.add_argument("--set", action="append", metavar="KEY=VALUE", help="RunConfig field, task.<param> or model.<param> (repeatable)")
    sp.add_argument("--runs-dir", default="runs", dest="runs_dir", help="folder of run records")
    sp.add_argument("--wandb", choices=("offline", "online", "disabled"), help="W&B mode (default: $WANDB_MODE or offline)")
    sp.add_argument("--force", action="store_true", help="re-run even if a finished result exists")
    sp.add_argument("--quiet", action="store_true", help="no progress output")
    sp.set_defaults(func=cmd_train)


class ProgressPrinter:
    """A tqdm bar on a terminal; otherwise a plain line every ``interval`` seconds."""

    def __init__(self, total: int, label: str, interval: float = 10.0) -> None:
        self.tty = sys.stderr.isatty()
        self.interval = interval
        self.last = 0.0
        self.label = label
        self.total = total
        self.bar = None
        if self.tty:
            from tqdm import tqdm

            # one rate only: ours (sequences per second of training), not tqdm's wall rate
            fmt = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} seq [{elapsed}<{remaining}{postfix}]"
            self.bar = tqdm(total=total, unit="seq", desc=label, dynamic_ncols=True, bar_format=fmt)

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

    def close(self, seen: int | None = None) -> None:
        if self.bar is not None:
            if seen is not None:
                self.bar.n = seen  # a run that stopped early ends the bar where it stopped
                self.bar.total = max(seen, 1) if seen < self.total else self.total
                self.bar.refresh()
            self.bar.close()


def build_run_config(args: argparse.Namespace) -> Any:
    from memtasks.train.config import RunConfig

    from memtasks.cli.common import CLIError

    base: dict[str, Any] = {"task": args.task, "model": args.model}
    set_keys = {item.split("=", 1)[0].strip() for item in args.set or ()}
    for key in ("seed", "sequences", "batch_size", "param_budget", "device", "group"):
        value = getattr(args, key, None)
        if value is not None:
            if key in set_keys:
                flag = "--" + key.replace("_", "-")
                raise CLIError(f"{flag} and --set {key}= both give {key}; give it once")
            base[key] = value
    return RunConfig(**base).with_sets(args.set or [])


def cmd_train(args: argparse.Namespace) -> int:
    from memtasks.train import interrupt
    from memtasks.train.trainer import Trainer

    load_plugins(args.plugin)
    config = build_run_config(args)
    label = f"{config.task}/{config.model}/seed-{config.seed}"
    trainer = Trainer(config, args.runs_dir, args.wandb)
    printer = ProgressPrinter(config.sequences, label) if not args.quiet else None
    trainer.progress = printer
    result: dict[str, Any] | None = None
    try:
        with interrupt.deferred_interrupts(escalate=True):  # Ctrl-C / SIGTERM: checkpoint, then exit 130
            result = trainer.run(force=args.force)
    finally:
        if printer is not None:
            printer.close(result["sequences_seen"] if result else None)
    if trainer.reused:
        print(f"{label}: already finished in {trainer.dir} (not re-run; --force trains it again)", file=sys.stderr)
    print(format_result(result))
    return EXIT_FAILED if result["status"] == "failed" else 0


def format_result(result: dict[str, Any]) -> str:
    from tabulate import tabulate

    final = result.get("final") or {}
    rows = [[label, *(f"{v:.4g}" for v in m.values())] for label, m in final.items()]
    headers = ["length", *next(iter(final.values()), {}).keys()]
    head = (
        f"{result['task']}/{result['model']}/seed-{result['seed']}: status={result['status']} "
        f"sequences={result['sequences_seen']:,} solved_at={result['sequences_to_solve']} "
        f"params={result['trainable_params']:,} {result['throughput']:.0f} seq/s wall={result['wall_time_s']:.1f}s"
    )
    if result.get("error"):
        head += f"\nerror: {result['error'].splitlines()[0]}"
    return head + ("\n" + tabulate(rows, headers=headers) if rows else "")
