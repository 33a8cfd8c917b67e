"""Per-step cost of the library's callbacks on a model so small that the hooks dominate.

    python benchmarks/callbacks_overhead.py [--steps 2000]

Trains a 4 -> 8 -> 1 MLP for ``--steps`` steps with all the per-step callbacks in one stack,
profiled by ``HookProfiler``, and prints the mean time of every batch hook (the part that runs
at every step) next to the mean step time without callbacks. Epoch-end work (checkpoints,
snapshots) is excluded: it scales with the model, not with the number of steps.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from callbacks.checkpoint import Checkpoint  # noqa: E402
from callbacks.early_stopping import EarlyStopping  # noqa: E402
from callbacks.hook_profiler import HookProfiler  # noqa: E402
from callbacks.lr_schedule import LRSchedule  # noqa: E402
from callbacks.nan_guard import NanGuard  # noqa: E402
from callbacks.progress import Progress  # noqa: E402
from callbacks.timing import Timing  # noqa: E402
from trainkit.context import RunContext  # noqa: E402

BATCH = 8


def model() -> keras.Model:
    keras.utils.set_random_seed(0)
    net = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8), keras.layers.Dense(1)])
    net.compile(keras.optimizers.SGD(0.01), "mse")
    return net


def fit_seconds(callbacks: list, steps: int) -> float:
    x = np.random.default_rng(0).normal(size=(steps * BATCH, 4)).astype("float32")
    y = x.sum(axis=1, keepdims=True)
    net = model()
    net.fit(x[:BATCH], y[:BATCH], batch_size=BATCH, epochs=1, verbose=0)  # trace outside
    start = time.perf_counter()
    net.fit(x, y, batch_size=BATCH, epochs=1, verbose=0, callbacks=callbacks)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    steps = parser.parse_args().steps
    with tempfile.TemporaryDirectory() as run_dir:
        bare = fit_seconds([], steps)
        profiler = HookProfiler(print_table=False)
        stack = [
            profiler,
            Timing(),
            LRSchedule("warmup_cosine", lr=0.01, warmup_steps=100),
            NanGuard(),
            EarlyStopping(monitor="loss", patience=5, verbose=0),
            Progress(mode="plain"),
            Checkpoint(monitor="loss", every_n_steps=10**9),  # counts steps, never saves
        ]
        context = RunContext(run_dir=Path(run_dir), batch_size=BATCH)
        context.extras["callbacks"] = stack
        for callback in stack:
            if hasattr(callback, "set_context"):
                callback.set_context(context)
        full = fit_seconds(stack, steps)
        summary = profiler.summary()["callbacks"]
    print(f"\n{steps} steps; step without callbacks: {bare / steps * 1e6:.0f} µs")
    print(f"step with the stack: {full / steps * 1e6:.0f} µs (includes Keras's own hook calls)")
    print(f"{'callback':<16}{'hook':<24}{'mean µs':>10}")
    for name, hooks in summary.items():
        for hook, stats in hooks.items():
            if "batch" in hook:
                print(f"{name:<16}{hook:<24}{stats['mean_s'] * 1e6:>10.1f}")


if __name__ == "__main__":
    main()
