"""What each callback costs a training step, as a ratio to training with no callback.

    python benchmarks/callback_overhead.py [--rounds 3] [--steps 200] [--only none,mlflow,full]

The model is the reference CNN (Conv32-Pool-Conv64-Pool-Conv128-GlobalAveragePooling-Dense10,
94,538 params) on random 32x32x3 images in tf.data, batch 64, 2 epochs of ``--steps`` steps plus
5 validation steps (several callbacks monitor ``val_loss``). The figure of a configuration is
the wall time of the SECOND epoch (the first one traces the graphs) divided by its steps,
measured from the end of the first epoch's ``on_epoch_end`` hooks to the end of the second's,
so work a callback does at epoch end counts. Configurations are interleaved round by round, so
a slow minute of a shared machine hits them all; the median over rounds is reported.

Rows: ``none``; each module of ``callbacks/`` alone (its entry in ``conf/callbacks/full.yaml``
if there is one, else its defaults); ``full``, the stack ``conf/callbacks/full.yaml`` composed by
Hydra with MLflow and TensorBoard logging every step; ``full without tracking``, the same
stack less those two (the library's own share); and two anchors:
``mlflow.keras.MlflowCallback(log_every_epoch=False, log_every_n_steps=1)`` and
``keras.callbacks.TensorBoard(update_freq="batch")``. MLflow writes to a temporary SQLite store.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import logging
import os
import pkgutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from trainkit.context import JobStatus, RunContext  # noqa: E402
from trainkit.stack import build_stack  # noqa: E402

REFERENCE_PARAMS = 94_538
BATCH = 64
VAL_STEPS = 5
# One-off tools, not something a stack runs every step: measured alone they change the training.
NOT_ALONE = {
    "lr_finder": "a learning-rate range test that rewrites the run",
    "backbone_finetuning": "needs a pretrained backbone",
}
NAMED = [
    "timing",
    "progress",
    "early_stopping",
    "lr_schedule",
    "checkpoint",
    "nan_guard",
    "hook_logger",
    "hook_profiler",
    "mlflow",
    "tensorboard",
]

Factory = Callable[[Path], list[keras.callbacks.Callback]]


def reference_model() -> keras.Model:
    layers = keras.layers
    model = keras.Sequential(
        [
            keras.Input((32, 32, 3)),
            layers.Conv2D(32, 3, padding="same", activation="relu"),
            layers.MaxPooling2D(),
            layers.Conv2D(64, 3, padding="same", activation="relu"),
            layers.MaxPooling2D(),
            layers.Conv2D(128, 3, padding="same", activation="relu"),
            layers.GlobalAveragePooling2D(),
            layers.Dense(10, activation="softmax"),
        ]
    )
    if model.count_params() != REFERENCE_PARAMS:
        raise SystemExit(f"reference CNN has {model.count_params()} params, not {REFERENCE_PARAMS}")
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def datasets() -> tuple[tf.data.Dataset, tf.data.Dataset]:
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (BATCH * 20, 32, 32, 3)).astype("float32") / 255.0
    y = rng.integers(0, 10, BATCH * 20)
    train = tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH).cache().repeat()
    val = tf.data.Dataset.from_tensor_slices((x[: BATCH * VAL_STEPS], y[: BATCH * VAL_STEPS]))
    return train.prefetch(tf.data.AUTOTUNE), val.batch(BATCH).cache()


class EpochClock(keras.callbacks.Callback):
    """Last in the list, so its on_epoch_end runs after every other callback's."""

    def __init__(self) -> None:
        super().__init__()
        self.ends: list[tuple[float, float]] = []

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        # CPU time of the whole process too (background writer threads included): on a
        # shared machine it moves less with the neighbours' load than the wall time does.
        self.ends.append((time.perf_counter(), time.process_time()))


# ---------------------------------------------------------------------------- configurations


def compose_full() -> dict[str, Any] | None:
    """``conf/callbacks/full.yaml`` as Hydra composes it, with every-step logging."""
    if not (ROOT / "conf" / "callbacks" / "full.yaml").exists():
        return None
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(str(ROOT / "conf"), version_base=None):
        overrides = ["callbacks=full"]
        cfg = compose("config", overrides=overrides)
    entries = OmegaConf.to_container(cfg.callbacks, resolve=True) or {}
    targets = {
        "mlflow": "callbacks.mlflow.MLflowLogger",
        "tensorboard": "callbacks.tensorboard.TensorBoardLogger",
    }
    for name, target in targets.items():
        if not isinstance(entries.get(name), dict):
            print(f"note: full.yaml has no '{name}' entry: added ({target}) for the 'full' row")
            entries[name] = {"_target_": target}
        entries[name]["log_every_n_steps"] = 1
    return entries


def module_entry(name: str, full: dict[str, Any] | None) -> dict[str, Any] | None:
    """The callback of ``callbacks/<name>.py`` as a ``_target_`` dict."""
    for entry in (full or {}).values():
        if isinstance(entry, dict) and str(entry.get("_target_", "")).startswith(
            f"callbacks.{name}."
        ):
            return dict(entry)
    module = importlib.import_module(f"callbacks.{name}")
    classes = [
        obj
        for obj in vars(module).values()
        if isinstance(obj, type)
        and issubclass(obj, keras.callbacks.Callback)
        and obj.__module__ == module.__name__
    ]
    if not classes:
        return None
    return {"_target_": f"{module.__name__}.{classes[0].__name__}"}


def instantiate(entries: dict[str, Any], run_dir: Path) -> list[keras.callbacks.Callback]:
    from trainkit.stack import instantiate_callbacks

    return instantiate_callbacks(entries)


def bench_context(run_dir: Path) -> RunContext:
    """What the job would hand the callbacks for the reference model."""
    return RunContext(
        run_dir=run_dir,
        config={"benchmark": {"model": "reference_cnn", "batch_size": BATCH}},
        model_name="reference_cnn",
        stack="benchmark",
        class_names=[str(i) for i in range(10)],
        image_size=(32, 32),
        batch_size=BATCH,
        tracking={
            "uri": f"sqlite:///{run_dir.parent / 'mlflow.db'}",
            "experiment": "callback_overhead",
            "log_model": False,  # after the measured epoch, and seconds each time
        },
    )


def configurations(only: set[str] | None) -> dict[str, Factory]:
    full = compose_full()
    found = {m.name for m in pkgutil.iter_modules([str(ROOT / "callbacks")])}
    names = [n for n in NAMED if n in found]
    names += sorted(found - set(NAMED) - {"base", "__init__"})
    configs: dict[str, Factory] = {"none": lambda run_dir: []}
    for name in NAMED:
        if name not in found:
            print(f"note: callbacks/{name}.py does not exist yet: not measured")
    for name in names:
        if name in NOT_ALONE:
            print(f"note: {name} not measured alone: {NOT_ALONE[name]}")
            continue
        entry = module_entry(name, full)
        if entry is None:
            print(f"note: callbacks/{name}.py has no Callback class: not measured")
            continue
        if name in ("mlflow", "tensorboard"):
            entry["log_every_n_steps"] = 1
        configs[name] = lambda run_dir, e={name: entry}: instantiate(e, run_dir)
    if full is None:
        print("note: conf/callbacks/full.yaml does not exist yet: no 'full' row")
    else:
        configs["full"] = lambda run_dir: instantiate(full, run_dir)
        # The callback library's own share (issue target: at most 2% over none).
        untracked = {k: v for k, v in full.items() if k not in ("mlflow", "tensorboard")}
        configs["full without tracking"] = lambda run_dir: instantiate(untracked, run_dir)

    def mlflow_anchor(run_dir: Path) -> list[keras.callbacks.Callback]:
        import mlflow

        mlflow.set_tracking_uri(f"sqlite:///{run_dir.parent / 'mlflow.db'}")
        mlflow.set_experiment("callback_overhead_anchor")
        mlflow.start_run()
        return [mlflow.keras.MlflowCallback(log_every_epoch=False, log_every_n_steps=1)]

    configs["anchor mlflow.keras.MlflowCallback"] = mlflow_anchor
    configs["anchor keras TensorBoard(batch)"] = lambda run_dir: [
        keras.callbacks.TensorBoard(log_dir=str(run_dir / "tb"), update_freq="batch")
    ]
    if only:
        configs = {k: v for k, v in configs.items() if k in only or k.split()[0] in only}
    return configs


# ---------------------------------------------------------------------------- measuring


def measure(factory: Factory, run_dir: Path, steps: int) -> tuple[float, float]:
    """(wall, CPU) seconds per step of the second epoch."""
    import mlflow

    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    train, val = datasets()
    model = reference_model()
    clock = EpochClock()
    # The job's wiring, so every configuration pays what it pays in a job.
    stack = build_stack([*factory(run_dir), clock], bench_context(run_dir), model)
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # progress bars and tables
            model.fit(
                train,
                validation_data=val,
                epochs=2,
                steps_per_epoch=steps,
                callbacks=stack.for_fit(2, steps),
                shuffle=False,
            )
    finally:
        stack.end_job(JobStatus.FINISHED)
        if mlflow.active_run() is not None:
            mlflow.end_run()
    (wall0, cpu0), (wall1, cpu1) = clock.ends
    return (wall1 - wall0) / steps, (cpu1 - cpu0) / steps


def table(rows: list[list[str]]) -> None:
    headers = ["configuration", "ms/step", "x none", "CPU ms/step", "CPU x none", "rounds (ms)"]
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
        print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
        for row in rows:
            print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
        return
    t = Table(*headers, title="callback overhead: 2nd epoch per step, median over rounds")
    # with --paired, "x none" is the median of the ratios to the `none` run beside each one
    for row in rows:
        t.add_row(*row)
    Console(width=140).print(t)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=200, help="steps per epoch")
    parser.add_argument("--only", default="", help="comma-separated configuration names")
    parser.add_argument(
        "--paired",
        action="store_true",
        help="measure `none` right beside each configuration (alternating which goes first) "
        "and report the median of the pairs' ratios: cancels a shared machine's slow drift",
    )
    args = parser.parse_args(argv)
    for name in ("mlflow", "alembic", "tensorflow", "absl", "trainkit", "hydra"):
        logging.getLogger(name).setLevel(logging.ERROR)

    only = {s.strip() for s in args.only.split(",") if s.strip()} or None
    if only:
        only.add("none")
    configs = configurations(only)
    wall: dict[str, list[float]] = {name: [] for name in configs}
    cpu: dict[str, list[float]] = {name: [] for name in configs}
    pairs: dict[str, list[float]] = {name: [] for name in configs}
    cpu_pairs: dict[str, list[float]] = {name: [] for name in configs}
    with tempfile.TemporaryDirectory(prefix="trainkit-bench-") as tmp:
        # The process's first fit pays one-off costs (op kernels, thread pools): not a row's.
        measure(configs["none"], Path(tmp) / "warmup", min(args.steps, 50))
        for round_ in range(args.rounds):
            for i, name in enumerate(configs):
                if args.paired and name == "none":
                    continue
                order = [name]
                if args.paired:
                    order = ["none", name] if (round_ + i) % 2 == 0 else [name, "none"]
                measured: dict[str, tuple[float, float]] = {}
                for j, which in enumerate(order):
                    run_dir = Path(tmp) / f"r{round_}-{i}-{j}"
                    measured[which] = measure(configs[which], run_dir, args.steps)
                    wall[which].append(measured[which][0])
                    cpu[which].append(measured[which][1])
                seconds, cpu_seconds = measured[name]
                if args.paired:
                    pairs[name].append(seconds / measured["none"][0])
                    cpu_pairs[name].append(cpu_seconds / measured["none"][1])
                print(
                    f"round {round_ + 1}/{args.rounds} {name}: {seconds * 1000:.2f} ms/step, "
                    f"CPU {cpu_seconds * 1000:.2f} ms/step"
                    + (f", x none {pairs[name][-1]:.3f}" if args.paired else ""),
                    flush=True,
                )
    base, base_cpu = statistics.median(wall["none"]), statistics.median(cpu["none"])
    rows = []
    for name in configs:
        ms, cpu_ms = statistics.median(wall[name]), statistics.median(cpu[name])
        ratio, cpu_ratio = ms / base, cpu_ms / base_cpu
        if args.paired and pairs[name]:
            ratio, cpu_ratio = statistics.median(pairs[name]), statistics.median(cpu_pairs[name])
        rounds = " ".join(f"{r * 1000:.1f}" for r in wall[name])
        rows.append(
            [
                name,
                f"{ms * 1000:.2f}",
                f"{ratio:.3f}",
                f"{cpu_ms * 1000:.2f}",
                f"{cpu_ratio:.3f}",
                rounds,
            ]
        )
    table(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
