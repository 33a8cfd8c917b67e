"""A long run with every callback: does anything grow that should not?

    python benchmarks/soak.py [--steps 20000] [--epochs 20] [--hook-log-max-mb 4]

Trains the fast-step MLP of ``callback_overhead.py`` (Dense 64 -> 128 -> 10, batch 64) for
``--steps`` steps with the ``full`` stack as Hydra composes it (MLflow to a temporary SQLite
store and TensorBoard both logging every step, the hook log, checkpoints, backups), through the
job's wiring. At every epoch end it samples the process's resident memory, its open files and
the size of the run directory's ``events.jsonl``; the table shows the first, second and last
samples and the growth from the second on (the loggers open their epoch files once, after the
first epoch's hooks). Targets (issue 9): resident memory grows less than 50 MB, open files
stay flat, ``events.jsonl`` stays bounded: the hook logger rotates it past ``max_bytes`` (64 MiB
by default, ``keep`` 2 rotated files), so all its files together stay under
``(keep + 1) * max_bytes``. 20,000 steps write about 14 MB, under the default size:
``--hook-log-max-mb`` sets a smaller one so that the soak rotates and shows the bound holding.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import keras  # noqa: E402
import psutil  # noqa: E402

from benchmarks.callback_overhead import (  # noqa: E402
    BATCH,
    bench_context,
    compose_full,
    datasets,
    fast_model,
)
from trainkit.context import JobStatus  # noqa: E402
from trainkit.stack import build_stack, instantiate_callbacks  # noqa: E402


class Sampler(keras.callbacks.Callback):
    """Last in the stack: samples memory, open files and the hook log's size at epoch ends."""

    def __init__(self, run_dir: Path) -> None:
        super().__init__()
        self.run_dir = run_dir
        self.process = psutil.Process()
        self.samples: list[dict[str, Any]] = []

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        events = self.run_dir / "events.jsonl"
        logs_size = sum(p.stat().st_size for p in self.run_dir.glob("events*.jsonl*"))
        self.samples.append(
            {
                "epoch": epoch + 1,
                "time": time.perf_counter(),
                "rss_mb": self.process.memory_info().rss / 2**20,
                "open_files": len(self.process.open_files()),
                "paths": sorted(f.path for f in self.process.open_files()),
                "fds": self.process.num_fds(),
                "events_mb": (events.stat().st_size if events.exists() else 0) / 2**20,
                "events_all_mb": logs_size / 2**20,
            }
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument(
        "--hook-log-max-mb", type=float, default=None, help="the hook logger's max_bytes, in MB"
    )
    args = parser.parse_args(argv)
    for name in ("mlflow", "alembic", "tensorflow", "absl", "trainkit", "hydra"):
        logging.getLogger(name).setLevel(logging.ERROR)
    steps = args.steps // args.epochs
    with tempfile.TemporaryDirectory(prefix="trainkit-soak-") as tmp:
        run_dir = Path(tmp) / "run"
        keras.utils.set_random_seed(0)
        model = fast_model()
        model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
        train, val = datasets("mlp")
        sampler = Sampler(run_dir)
        entries = compose_full() or {}
        hook_log = entries.get("hook_logger")
        if isinstance(hook_log, dict) and args.hook_log_max_mb:
            hook_log["max_bytes"] = int(args.hook_log_max_mb * 2**20)
        bound = _hook_log_bound(hook_log if isinstance(hook_log, dict) else {})
        stack = build_stack(
            [*instantiate_callbacks(entries), sampler], bench_context(run_dir), model
        )
        start = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            try:
                model.fit(
                    train,
                    validation_data=val,
                    epochs=args.epochs,
                    steps_per_epoch=steps,
                    callbacks=stack.for_fit(args.epochs, steps),
                    shuffle=False,
                )
            finally:
                stack.end_job(JobStatus.FINISHED)
        wall = time.perf_counter() - start
    from rich.console import Console
    from rich.table import Table

    samples = sampler.samples
    # The loggers open their epoch-scalar files after the first epoch's hooks (after the
    # sampler): growth is counted from the second epoch, once every writer is open.
    first, settled, last = samples[0], samples[min(1, len(samples) - 1)], samples[-1]
    title = (
        f"soak: {args.epochs} x {steps} steps (batch {BATCH}), callbacks=full, "
        f"{wall:.0f} s ({wall / args.steps * 1e3:.2f} ms/step)"
    )
    table = Table(
        "sample",
        "after epoch",
        "RSS MB",
        "open files",
        "fds",
        "events.jsonl MB",
        "all hook logs MB",
        title=title,
    )
    for name, sample in (("first", first), ("second", settled), ("last", last)):
        table.add_row(
            name,
            str(sample["epoch"]),
            f"{sample['rss_mb']:.0f}",
            str(sample["open_files"]),
            str(sample["fds"]),
            f"{sample['events_mb']:.1f}",
            f"{sample['events_all_mb']:.1f}",
        )
    table.add_row(
        "growth (second to last)",
        "",
        f"{last['rss_mb'] - settled['rss_mb']:+.0f}",
        f"{last['open_files'] - settled['open_files']:+d}",
        f"{last['fds'] - settled['fds']:+d}",
        f"{last['events_mb'] - settled['events_mb']:+.1f}",
        f"{last['events_all_mb'] - settled['events_all_mb']:+.1f}",
    )
    console = Console(width=140)
    console.print(table)
    rss = last["rss_mb"] - settled["rss_mb"]
    files = last["open_files"] - settled["open_files"]
    opened = sorted(set(settled["paths"]) - set(first["paths"]))
    if opened:
        console.print(
            "opened during the first epoch's end: " + ", ".join(Path(p).name for p in opened)
        )
    console.print(
        f"targets: RSS growth {rss:+.0f} MB (< 50: {'met' if rss < 50 else 'NOT met'}); "
        f"open files {files:+d} (flat: {'met' if files <= 0 else 'NOT met'}); hook logs "
        f"{last['events_all_mb']:.1f} MB, bound {bound}"
    )
    return 0


def _hook_log_bound(entry: dict[str, Any]) -> str:
    """What the hook logger's options allow on disk: (keep + 1) x max_bytes."""
    import inspect

    from callbacks.hook_logger import HookLogger

    defaults = {name: p.default for name, p in inspect.signature(HookLogger).parameters.items()}
    max_bytes = entry.get("max_bytes", defaults["max_bytes"])
    keep = int(entry.get("keep", defaults["keep"]))
    if not max_bytes:
        return "none (rotation off)"
    return f"{(keep + 1) * max_bytes / 2**20:.1f} MB ((keep {keep} + 1) x {max_bytes / 2**20:.1f})"


if __name__ == "__main__":
    raise SystemExit(main())
