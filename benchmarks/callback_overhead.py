"""What each callback costs a training step: extra microseconds and the ratio to no callback.

    python benchmarks/callback_overhead.py [--model mlp|cnn|both] [--rounds 5] [--steps 300]
                                           [--epochs 3] [--only none,mlflow,full] [--spe 1,10]
                                           [--loop] [--interleave [--block 50]]

Two models, because a slow step hides a per-step cost that a fast one shows:

* ``mlp``, the fast-step model: Dense 64 -> 128 -> 10 on random features, batch 64, tf.data from
  memory (about a millisecond a step, what a GPU step of a small model takes);
* ``cnn``, the reference CNN (Conv32-Pool-Conv64-Pool-Conv128-GAP-Dense10, 94,538 params) on
  random 32x32x3 images, batch 64.

Each run trains ``--epochs`` epochs (3) of ``--steps`` steps plus 5 validation steps, through
the job's own wiring (:func:`trainkit.stack.build_stack`). The figure of a run is the wall time
per step of its steady epochs, from the end of the first epoch's hooks (the first traces the
graphs and starts the writers) to the end of the last but one's: a middle epoch, with its
validation and its end (the backup's save, the checkpoint, the loggers' flushes) as every
epoch of a long run has them. The last epoch's end is not a steady one (the backup saves at
``on_train_end`` instead); with ``--epochs 2`` it is the one measured all the same.

Every configuration is measured **paired**: in each round it runs right beside a ``none`` run
(alternating which goes first), and the table gives the median over rounds of the pair's
difference (extra us a step) and ratio. An earlier default compared the median of a
configuration's rounds with the median of ``none``'s rounds, taken minutes apart: on this
shared 2-core machine one configuration's step time varies by up to 25% between rounds, so
with 3 rounds that ratio moved by +-10% from run to run (1.12x against 1.02x for the same
stack); pairing cancels the drift both share.

Columns besides the wall time: ``hook us/step`` is measured directly, without a baseline: the
wall time the training thread spends inside the stack's hook dispatch per step (all callbacks'
hooks, epoch-end work included), which is what a callback adds on top of Keras when its work is
not hidden behind the device. ``hook cpu us`` is the same in CPU time of the training thread:
it does not count the time the thread waits (for the GIL, a lock, a core taken by another
process), so it is the steadiest figure on a loaded machine. ``extra cpu us`` is the paired
difference of the process's CPU time per step (every thread: the training loop, TensorFlow's
pools and the background writers of MLflow, TensorBoard and the hook log), plus that of its
children (MLflow's store helper process): work moved to a thread or a helper leaves the
training thread but still shows here, and on a machine with cores to spare it costs no wall
time.

Rows: ``none``; each module of ``callbacks/`` alone (its entry in ``conf/callbacks/full.yaml``
if there is one, else its defaults), and ``lr_schedule`` with a per-step schedule
(``warmup_cosine``) besides the stacks' constant one; ``full`` (the composed stack, MLflow and
TensorBoard logging every step); ``full without tracking`` (the library's own share); two anchors,
``mlflow.keras.MlflowCallback(log_every_n_steps=1)`` and ``keras.callbacks.TensorBoard(
update_freq="batch")``; and with ``--spe 1,10``, ``full`` and ``none`` at
``steps_per_execution=10`` too. MLflow writes to a temporary SQLite store, through the helper
process of :mod:`trainkit.tracking.store_process`; the rows marked ``(store writes in-process)``
run ``mlflow`` and ``full`` with MLflow's writes in the training process instead, side by side.
Each round's line says how many of the run's steps reached MLflow.

``--interleave`` measures the stack's per-step cost without a baseline run: one fit per
configuration, whose train batch hooks are called for ``--block`` steps and skipped for the next
``--block``, in turn. The two halves of the comparison are milliseconds apart, so the machine's
drift, which moves a paired ratio by +-15-40% here, cancels. Each pair of turns (an "on" block
and the "off" block after it) gives the difference of their mean step times (the first 3 steps
of each block and the epochs' last steps left out); the figure is the median pair's, as a burst
of another process on this shared machine moves the mean of all pairs. The epoch end is measured
in the same fit: the wall time of a steady epoch's last step (validation and every epoch-end
hook) beside ``none``'s. The total adds both above ``none``'s (whose stack has Keras's progress
bar), an epoch end spread over ``--steps`` steps. In the off blocks the loggers get no rows, so
their background writers do about half their work: what they cost the training thread is in the
paired table. The column ``writers' cpu`` is what they did: the CPU time of the stack's writer
threads (``trainkit-*``) and of MLflow's store helper over the steady epochs, a step (their
per-step rows from the on blocks only, so about twice this with every step recorded; read from
``/proc`` in 10 ms ticks). On a machine with a core to spare it runs beside training; here,
with two, it competes with TensorFlow's threads.

``--loop`` measures each callback's own work on the training thread instead, without the
noise of a shared machine: per configuration, after one epoch of ``--steps`` steps, the
stack's train batch hooks are called 2,000 times in a row (the logs as Keras hands them, scalar
tensors) and its ``on_epoch_end`` 5 times with improving validation metrics (so the
checkpoint saves each time), timed in the thread's CPU time (best of 5 loops,
best of ``--rounds`` builds). What a background writer costs the training thread by running
beside it does not show there; the paired table shows it, with the noise.
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

from trainkit.context import JobStatus, RunContext, TracksRun  # noqa: E402
from trainkit.stack import build_stack  # noqa: E402
from trainkit.tracking.store_process import ENV_SWITCH  # noqa: E402

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
# seconds per step: wall, in the hooks (wall), in the hooks (thread CPU), process CPU
Sample = tuple[float, float, float, float]


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
    return model


def fast_model() -> keras.Model:
    """A model whose step takes about what a GPU step of a small model takes (~1 ms)."""
    return keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )


MODELS: dict[str, Callable[[], keras.Model]] = {"mlp": fast_model, "cnn": reference_model}


def datasets(kind: str) -> tuple[tf.data.Dataset, tf.data.Dataset]:
    rng = np.random.default_rng(0)
    shape = (64,) if kind == "mlp" else (32, 32, 3)
    x = rng.uniform(0, 1, (BATCH * 20, *shape)).astype("float32")
    y = rng.integers(0, 10, BATCH * 20)
    train = tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH).cache().repeat()
    val = tf.data.Dataset.from_tensor_slices((x[: BATCH * VAL_STEPS], y[: BATCH * VAL_STEPS]))
    return train.prefetch(tf.data.AUTOTUNE), val.batch(BATCH).cache()


class NoOpBatchHooks(keras.callbacks.Callback):
    """Both train batch hooks, doing nothing: Keras's own floor for a callback that has them."""

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        pass

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        pass


class HookTimer:
    """Time the training thread spends inside the stack's train hooks, and epoch-end marks.

    Wraps the dispatch methods of one :class:`trainkit.stack.Stack` instance (the stack itself
    is built the job's way); ``marks`` holds, after each epoch: the wall clock, the hook
    seconds so far (wall), the hook seconds so far in CPU time of the training thread, and the
    process's CPU time (every thread: training, TensorFlow's pools, the writers) with its
    children's (MLflow's store helper).
    """

    HOOKS = ("on_train_batch_begin", "on_train_batch_end", "on_epoch_begin", "on_epoch_end")

    def __init__(self, stack: Any) -> None:
        self.total = 0.0
        self.cpu = 0.0
        self.marks: list[tuple[float, float, float, float]] = []
        for hook in self.HOOKS:
            setattr(stack, hook, self._timed(getattr(stack, hook), hook == "on_epoch_end"))

    def _timed(self, method: Callable[..., None], mark: bool) -> Callable[..., None]:
        def timed(*args: Any, **kwargs: Any) -> None:
            cpu = time.thread_time()
            start = time.perf_counter()
            method(*args, **kwargs)
            end = time.perf_counter()
            self.cpu += time.thread_time() - cpu
            self.total += end - start
            if mark:
                self.marks.append((end, self.total, self.cpu, cpu_with_children()))

        return timed


def cpu_with_children() -> float:
    """This process's CPU seconds plus its live children's: MLflow's store helper process
    (:mod:`trainkit.tracking.store_process`) does work the job asked for, so it counts."""
    import psutil

    total = time.process_time()
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            times = child.cpu_times()
            total += times.user + times.system
    return total


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
    # (a no-op callback with train batch hooks: what Keras itself charges for having any)
    configs["anchor no-op batch hooks"] = lambda run_dir: [NoOpBatchHooks()]
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
        if name == "lr_schedule":
            # The stacks' schedule is constant; a per-step schedule changes the rate every step.
            cosine = {**entry, "schedule": "warmup_cosine", "warmup_steps": 100}
            configs["lr_schedule warmup_cosine"] = lambda run_dir, e={name: cosine}: instantiate(
                e, run_dir
            )
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
        configs = {
            k: v for k, v in configs.items() if k == "none" or k in only or k.split()[0] in only
        }
    return configs


# ---------------------------------------------------------------------------- measuring


def _fresh_model(kind: str, spe: int) -> tuple[keras.Model, Any, Any]:
    """The benchmark's model of ``kind``, compiled, seeded alike each time; its data."""
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    train, val = datasets(kind)
    model = MODELS[kind]()
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        steps_per_execution=spe,
    )
    return model, train, val


def measure(
    factory: Factory, run_dir: Path, steps: int, kind: str, spe: int, epochs: int = 2
) -> Sample:
    """Seconds per step of the second epoch: (wall, inside the stack's hooks)."""
    import mlflow

    model, train, val = _fresh_model(kind, spe)
    # The job's wiring, so every configuration pays what it pays in a job.
    stack = build_stack(factory(run_dir), bench_context(run_dir), model)
    timer = HookTimer(stack)
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # progress bars and tables
            model.fit(
                train,
                validation_data=val,
                epochs=epochs,
                steps_per_epoch=steps,
                callbacks=stack.for_fit(epochs, steps),
                shuffle=False,
            )
    finally:
        with contextlib.redirect_stdout(io.StringIO()):  # the hook profiler's table
            stack.end_job(JobStatus.FINISHED)
        if mlflow.active_run() is not None:
            mlflow.end_run()
    first, last = steady_epochs(timer.marks)
    measured = steps * (len(timer.marks) - 2 if len(timer.marks) > 2 else 1)
    wall, hooks, hooks_cpu, cpu = ((b - a) / measured for a, b in zip(first, last, strict=True))
    LOGGED[run_dir] = steps_in_mlflow(stack)
    return wall, hooks, hooks_cpu, cpu


def steady_epochs(marks: list[Any]) -> tuple[Any, Any]:
    """The marks around the steady epochs: after the first's end, to the last but one's end
    (with two epochs, the last's)."""
    if len(marks) > 2:
        return marks[0], marks[-2]
    return marks[-2], marks[-1]


IN_PROCESS = "(store writes in-process)"


@contextlib.contextmanager
def store_process_off(off: bool) -> Any:
    """MLflow's store written from the job's process (no helper process) while ``off``."""
    if not off:
        yield
        return
    os.environ[ENV_SWITCH] = "0"
    try:
        yield
    finally:
        del os.environ[ENV_SWITCH]


# run directory -> training steps with a ``loss`` point in MLflow (None: no MLflow logger)
LOGGED: dict[Path, int | None] = {}


def steps_in_mlflow(stack: Any) -> int | None:
    """How many steps of the run got their ``loss`` into MLflow: the target is that tracking
    still gets every step, ``steps_per_execution`` or not."""
    from mlflow import MlflowClient

    tracker = stack.context.find(TracksRun)
    if tracker is None or tracker.run is None:
        return None
    client = MlflowClient(tracker.run.spec.uri)
    return len({m.step for m in client.get_metric_history(tracker.run.run_id, "loss")})


HEADERS = [
    "configuration",
    "ms/step",
    "extra us/step",
    "x none",
    "hook us/step",
    "hook cpu us",
    "extra cpu us",
    "pairs x none",
]


def table(title: str, rows: list[list[str]]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(*HEADERS, title=title)
    for row in rows:
        t.add_row(*row)
    Console(width=170).print(t)


LOOP_CALLS = 2000


def measure_loop(factory: Factory, run_dir: Path, steps: int, kind: str) -> tuple[float, float]:
    """(µs of training-thread CPU a step in the train batch hooks, ms an epoch end)."""
    import mlflow

    model, train, val = _fresh_model(kind, 1)
    stack = build_stack(factory(run_dir), bench_context(run_dir), model)
    loss, accuracy = tf.constant(0.5), tf.constant(0.25)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            # one real epoch: the graphs traced, every callback set up as in a job
            model.fit(train, validation_data=val, epochs=1, steps_per_epoch=steps,
                      callbacks=stack.for_fit(2, steps), shuffle=False)  # fmt: skip
            stack.on_epoch_begin(1)
            loops = []
            for _ in range(5):
                start = time.thread_time()
                for i in range(LOOP_CALLS):
                    batch = i % steps
                    stack.on_train_batch_begin(batch)
                    stack.on_train_batch_end(batch, {"loss": loss, "accuracy": accuracy})
                loops.append((time.thread_time() - start) / LOOP_CALLS)
            ends = []
            for epoch in range(1, 6):
                # every epoch improves, so the checkpoint saves each time, as at its dearest
                logs = {
                    "loss": 0.5,
                    "accuracy": 0.25,
                    "val_loss": 0.7 - epoch / 100,
                    "val_accuracy": 0.2 + epoch / 100,
                }
                start = time.thread_time()
                stack.on_epoch_end(epoch, logs)
                ends.append(time.thread_time() - start)
                stack.on_epoch_begin(epoch + 1)
    finally:
        with contextlib.redirect_stdout(io.StringIO()):
            stack.end_job(JobStatus.FINISHED)
        if mlflow.active_run() is not None:
            mlflow.end_run()
    return min(loops) * 1e6, statistics.median(ends) * 1e3


class Interleave:
    """The stack's train batch hooks, called for ``block`` steps and skipped for the next
    ``block``, in turn; each step's start time recorded (one ``perf_counter`` read), and at
    each epoch's first step the background writers' CPU so far (:func:`background_cpu`, after
    the clock read: that step's time is not measured)."""

    def __init__(self, stack: Any, block: int, steps: int) -> None:
        self.block = block
        self.steps = steps
        self.starts: list[float] = []
        self.background: list[float] = []
        self._begin, self._end = stack.on_train_batch_begin, stack.on_train_batch_end
        stack.on_train_batch_begin = self.begin
        stack.on_train_batch_end = self.end

    def on(self) -> bool:
        return (len(self.starts) - 1) // self.block % 2 == 0

    def begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self.starts.append(time.perf_counter())
        if len(self.starts) % self.steps == 1:
            self.background.append(background_cpu())
        if self.on():
            self._begin(batch, logs)

    def end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        if self.on():
            self._end(batch, logs)

    def split(self, steps: int) -> tuple[list[float], list[float], list[float]]:
        """Per pair of turns (an on block and the off block after it), the mean step time of
        each, over the steady epochs' steps; and the epoch ends' durations (seconds)."""
        durations = np.diff(np.asarray(self.starts))
        blocks: dict[int, list[float]] = {}
        ends: list[float] = []
        for i in range(steps, len(durations)):  # the first epoch traces and starts writers
            if (i + 1) % steps == 0:
                ends.append(float(durations[i]))
            elif i % self.block >= 3:
                blocks.setdefault(i // self.block, []).append(float(durations[i]))
        on: list[float] = []
        off: list[float] = []
        for index, values in sorted(blocks.items()):
            following = blocks.get(index + 1)
            if index % 2 == 0 and following:
                on.append(statistics.fmean(values))
                off.append(statistics.fmean(following))
        return on, off, ends


def background_cpu() -> float:
    """CPU seconds of the stack's writer threads (``trainkit-*``) and of child processes
    (MLflow's store helper): work done beside the training thread."""
    import threading

    import psutil

    names = {thread.native_id: thread.name for thread in threading.enumerate()}
    process = psutil.Process()
    total = sum(
        t.user_time + t.system_time
        for t in process.threads()
        if names.get(t.id, "").startswith("trainkit-")
    )
    for child in process.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            times = child.cpu_times()
            total += times.user + times.system
    return total


def measure_interleaved(
    factory: Factory, run_dir: Path, steps: int, kind: str, epochs: int, block: int
) -> tuple[float, float, float, float]:
    """(mean s a step with the hooks on, with them off, median s of a steady epoch end, CPU s
    of the background writers a step): the two means are those of the pair of turns whose
    difference is the median one."""
    import mlflow

    model, train, val = _fresh_model(kind, 1)
    stack = build_stack(factory(run_dir), bench_context(run_dir), model)
    turns = Interleave(stack, block, steps)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            model.fit(train, validation_data=val, epochs=epochs, steps_per_epoch=steps,
                      callbacks=stack.for_fit(epochs, steps), shuffle=False)  # fmt: skip
    finally:
        with contextlib.redirect_stdout(io.StringIO()):
            stack.end_job(JobStatus.FINISHED)
        if mlflow.active_run() is not None:
            mlflow.end_run()
    on, off, ends = turns.split(steps)  # (the last epoch's end, not a steady one, is not there)
    # The median pair: a pair of turns hit by another process's burst moves the mean of all.
    middle = sorted(range(len(on)), key=lambda i: on[i] - off[i])[len(on) // 2]
    # the steady epochs: from the second epoch's first step to the last one's
    marks = turns.background[1:]
    background = (marks[-1] - marks[0]) / ((len(marks) - 1) * steps)
    return on[middle], off[middle], statistics.median(ends), background


def interleave_table(configs: dict[str, Factory], args: argparse.Namespace, kind: str) -> None:
    from rich.console import Console
    from rich.table import Table

    names = [n for n in configs if not n.startswith("anchor")]
    got: dict[str, list[tuple[float, float, float, float]]] = {n: [] for n in names}
    with tempfile.TemporaryDirectory(prefix="trainkit-bench-") as tmp:
        for round_ in range(max(1, args.rounds)):
            for name in names:
                run_dir = Path(tmp) / f"r{round_}-{name.replace(' ', '_')}"
                on, off, end, background = measure_interleaved(
                    configs[name], run_dir, args.steps, kind, max(args.epochs, 3), args.block
                )
                got[name].append((on, off, end, background))
                print(
                    f"{kind} round {round_ + 1}/{args.rounds} {name}: hooks on {on * 1e6:.1f} "
                    f"us, off {off * 1e6:.1f} us, epoch end {end * 1e3:.1f} ms",
                    flush=True,
                )
    base_end = statistics.median(r[2] for r in got["none"])
    base_hooks = statistics.median(r[0] - r[1] for r in got["none"])
    t = Table(
        "configuration", "step us (off)", "batch hooks us", "above none", "epoch end ms",
        "above none", "total above none us/step", "x none", "writers' cpu us/step",
        "rounds: batch hooks us",
        title=(
            f"{kind}: the stack on and off every {args.block} steps inside one fit "
            f"({args.steps} steps an epoch; median of {args.rounds} rounds)"
        ),
    )  # fmt: skip
    for name in names:
        rows = got[name]
        off = statistics.median(r[1] for r in rows)
        hooks = statistics.median(r[0] - r[1] for r in rows)
        end = statistics.median(r[2] for r in rows)
        total = hooks - base_hooks + (end - base_end) / args.steps
        t.add_row(
            name, f"{off * 1e6:.0f}", f"{hooks * 1e6:+.1f}", f"{(hooks - base_hooks) * 1e6:+.1f}",
            f"{end * 1e3:.1f}", f"{(end - base_end) * 1e3:+.1f}", f"{total * 1e6:+.1f}",
            f"{(off + base_hooks + total) / (off + base_hooks):.3f}",
            f"{statistics.median(r[3] for r in rows) * 1e6:.1f}",
            " ".join(f"{(r[0] - r[1]) * 1e6:+.0f}" for r in rows),
        )  # fmt: skip
    Console(width=210).print(t)


def loop_table(configs: dict[str, Factory], args: argparse.Namespace, kind: str) -> None:
    from rich.console import Console
    from rich.table import Table

    names = [n for n in configs if not n.startswith("anchor")]
    best: dict[str, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory(prefix="trainkit-bench-") as tmp:
        for round_ in range(max(1, args.rounds)):
            for name in names:
                run_dir = Path(tmp) / f"r{round_}-{name.replace(' ', '_')}"
                batch, end = measure_loop(configs[name], run_dir, args.steps, kind)
                old = best.get(name, (batch, end))
                best[name] = (min(old[0], batch), min(old[1], end))
    base_batch, base_end = best["none"]
    t = Table(
        "configuration", "batch hooks us/step", "above none", "epoch end ms", "above none",
        title=f"{kind}: training-thread CPU of the stack's hooks, tight loop",
    )  # fmt: skip
    for name in names:
        batch, end = best[name]
        t.add_row(
            name, f"{batch:.1f}", f"{batch - base_batch:+.1f}", f"{end:.2f}",
            f"{end - base_end:+.2f}",
        )  # fmt: skip
    Console(width=170).print(t)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=["mlp", "cnn", "both"], default="both")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=300, help="steps per epoch")
    parser.add_argument(
        "--epochs", type=int, default=3, help="the steady ones (not the first) are measured"
    )
    parser.add_argument("--only", default="", help="comma-separated configuration names")
    parser.add_argument(
        "--spe", default="1,10", help="steps_per_execution values; k > 1 runs full and none only"
    )
    parser.add_argument(
        "--loop", action="store_true", help="each stack's hooks in a tight loop (see above)"
    )
    parser.add_argument(
        "--interleave", action="store_true", help="the stack on and off inside one fit"
    )
    parser.add_argument("--block", type=int, default=50, help="steps a turn (--interleave)")
    args = parser.parse_args(argv)
    for name in ("mlflow", "alembic", "tensorflow", "absl", "trainkit", "hydra"):
        logging.getLogger(name).setLevel(logging.ERROR)

    only = {s.strip() for s in args.only.split(",") if s.strip()} or None
    configs = configurations(only)
    runs: list[tuple[str, str, int]] = [(n, n, 1) for n in configs if n != "none"]
    # MLflow's SQLite writes in the job's own process, as before the helper process: the same
    # stacks side by side with and without it.
    for name in ("mlflow", "full"):
        if name in configs:
            runs.append((f"{name} {IN_PROCESS}", name, 1))
    for k in (int(v) for v in args.spe.split(",") if v.strip() and int(v) > 1):
        if "full" in configs:
            runs.append((f"full (steps_per_execution={k})", "full", k))
    kinds = ["mlp", "cnn"] if args.model == "both" else [args.model]
    if args.loop:
        for kind in kinds:
            loop_table(configs, args, kind)
        return 0
    if args.interleave:
        for kind in kinds:
            interleave_table(configs, args, kind)
        return 0
    for kind in kinds:
        results: dict[str, list[tuple[Sample, Sample]]] = {label: [] for label, _, _ in runs}
        with tempfile.TemporaryDirectory(prefix="trainkit-bench-") as tmp:
            # The process's first fit pays one-off costs (op kernels, thread pools): not a row's.
            measure(configs["none"], Path(tmp) / "warmup", min(args.steps, 50), kind, 1)
            for round_ in range(args.rounds):
                for i, (label, name, spe) in enumerate(runs):
                    order = ["none", name] if (round_ + i) % 2 == 0 else [name, "none"]
                    got: dict[str, Sample] = {}
                    for j, which in enumerate(order):
                        run_dir = Path(tmp) / f"r{round_}-{i}-{j}"
                        inline = which != "none" and label.endswith(IN_PROCESS)
                        with store_process_off(inline):
                            got[which] = measure(
                                configs[which], run_dir, args.steps, kind, spe, args.epochs
                            )
                    results[label].append((got["none"], got[name]))
                    none_ms, ms = got["none"][0] * 1e3, got[name][0] * 1e3
                    logged = LOGGED.get(Path(tmp) / f"r{round_}-{i}-{order.index(name)}")
                    steps_note = (
                        ""
                        if logged is None
                        else f", MLflow has {logged} of {args.epochs * args.steps} steps"
                    )
                    print(
                        f"{kind} round {round_ + 1}/{args.rounds} {label}: {ms:.3f} ms/step "
                        f"beside none {none_ms:.3f}{steps_note}",
                        flush=True,
                    )
        rows = []
        nones = [none for pairs in results.values() for none, _ in pairs]
        rows.append(
            [
                "none",
                f"{statistics.median(n[0] for n in nones) * 1e3:.3f}",
                "0",
                "1.000",
                f"{statistics.median(n[1] for n in nones) * 1e6:.1f}",
                f"{statistics.median(n[2] for n in nones) * 1e6:.1f}",
                "0",
                "",
            ]
        )
        for label, pairs in results.items():
            ratios = [c[0] / n[0] for n, c in pairs]
            extra = statistics.median((c[0] - n[0]) for n, c in pairs) * 1e6
            extra_cpu = statistics.median((c[3] - n[3]) for n, c in pairs) * 1e6
            rows.append(
                [
                    label,
                    f"{statistics.median(c[0] for _, c in pairs) * 1e3:.3f}",
                    f"{extra:+.0f}",
                    f"{statistics.median(ratios):.3f}",
                    f"{statistics.median(c[1] for _, c in pairs) * 1e6:.1f}",
                    f"{statistics.median(c[2] for _, c in pairs) * 1e6:.1f}",
                    f"{extra_cpu:+.0f}",
                    " ".join(f"{r:.2f}" for r in ratios),
                ]
            )
        title = (
            f"callback overhead, {kind}: steady epochs of {args.steps} steps ({args.epochs} in "
            f"all), batch {BATCH}, median of {args.rounds} pairs beside none"
        )
        table(title, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
