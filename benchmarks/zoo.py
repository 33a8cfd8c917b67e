"""Model-zoo benchmark: parameters, GMACs, and train / inference throughput on this machine.

    python benchmarks/zoo.py                                  # every model, 96 px, 3 steps
    python benchmarks/zoo.py --models resnet50 vgg16 --image-size 128 --steps 5
    python benchmarks/zoo.py --models mobilenet_v2 --policies float32

For each model: trainable parameters at 1000 classes, multiply-accumulates of one forward pass
of one image (counted from the layers' output shapes, see ``trainkit.models.complexity``), and
images per second of ``train_on_batch`` and ``predict_on_batch`` at the batch size, in each
precision policy. The first call of each (tracing the tf.function) is excluded and shown as
"warm-up". Throughput on a shared CPU varies from run to run: compare models within one run.
The whole zoo at 96 px takes about 8 minutes on 2 cores (a few seconds to a minute per model,
mostly tracing); pass ``--models`` to time a few.

``--vs-keras`` measures instead, per model, training on the job's data (digits at
``--image-size``, ``--limit`` training images, batch ``--batch-size``, one precision):

* plain Keras: in a fresh process, the model built and compiled as the job does (Adam, the
  same metrics), then one ``model.fit(train, validation_data=val, epochs=E)`` whose only
  callback is the probe below;
* ``python run.py ... callbacks=none`` and ``callbacks=full`` (``--epochs`` epochs, the model
  not logged), with the probe placed last in the stack.

The probe has only epoch and test hooks and times the training phase of each epoch (its
``on_epoch_begin`` to the validation's ``on_test_begin``, every batch hook inside); the first
epoch traces the step and is not counted, the best of the others is. All three are measured
the same way, each in a process of its own. (Before 2026-11-28 plain Keras ran ``fit`` once
per epoch in the benchmark's own process, timed whole: a different measure, which put plain
Keras at half of ``run.py``'s speed on some models.)

Each is given in images per second of wall time and per second of the process's CPU time (all
its threads, the tracking writers' included): on a shared machine the wall figures move with
the other work, the CPU ones much less.

and the achieved training FLOP/s of plain Keras, ``3 x 2 x MACs`` per image (forward, and twice
that for the backward pass), as a fraction of this machine's matmul peak in the matching dtype
(``benchmarks/peak.py``: float32 for ``float32``, bfloat16 for the mixed policies), measured at
the start of the run under the same load.

    python benchmarks/zoo.py --vs-keras --models mobilenet_v2 inception_v1 --image-size 64
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's trainkit and benchmarks, whatever is installed

from trainkit.models import available_models, build_model, get_spec  # noqa: E402
from trainkit.models.complexity import count_macs  # noqa: E402

POLICIES = ("float32", "mixed_bfloat16")


@dataclass
class Result:
    name: str
    size: int
    params: int = 0
    gmacs: float = 0.0
    train: dict[str, float] = field(default_factory=dict)  # policy -> images / s
    infer: dict[str, float] = field(default_factory=dict)
    warmup: dict[str, float] = field(default_factory=dict)  # policy -> seconds of tracing


def throughput(call, steps: int, batch_size: int) -> tuple[float, float]:
    """(seconds of the first call, images / s over the next ``steps`` calls)."""
    start = time.perf_counter()
    call()
    warmup = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(steps):
        call()
    return warmup, steps * batch_size / (time.perf_counter() - start)


def bench(name: str, size: int, steps: int, batch_size: int, policies, classes: int) -> Result:
    result = Result(name, size)
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (batch_size, size, size, 3)).astype("float32")
    labels = rng.integers(0, classes, batch_size)
    for policy in policies:
        keras.mixed_precision.set_global_policy(policy)
        model = build_model(name, classes, input_shape=size)
        if not result.params:
            result.params = sum(math.prod(w.shape) for w in model.trainable_weights)
            result.gmacs = count_macs(model) / 1e9
        model.compile(optimizer=keras.optimizers.SGD(0.01), loss="sparse_categorical_crossentropy")
        trace_train, result.train[policy] = throughput(
            lambda m=model: m.train_on_batch(images, labels), steps, batch_size
        )
        trace_infer, result.infer[policy] = throughput(
            lambda m=model: m.predict_on_batch(images), steps, batch_size
        )
        result.warmup[policy] = trace_train + trace_infer
        del model
        keras.backend.clear_session()
    keras.mixed_precision.set_global_policy("float32")
    return result


def table(results: list[Result], policies, batch_size: int, steps: int) -> Table:
    short = {"float32": "f32", "mixed_bfloat16": "bf16", "mixed_float16": "f16"}
    out = Table(title=f"trainkit zoo on this CPU: batch {batch_size}, {steps} timed steps")
    for column in ("model", "input", "params", "GMACs"):
        out.add_column(column, justify="left" if column == "model" else "right")
    for policy in policies:
        out.add_column(f"train img/s {short.get(policy, policy)}", justify="right")
        out.add_column(f"infer img/s {short.get(policy, policy)}", justify="right")
    out.add_column("warm-up s", justify="right")
    for r in results:
        cells = [r.name, f"{r.size}", f"{r.params / 1e6:.1f} M", f"{r.gmacs:.2f}"]
        for policy in policies:
            cells += [f"{r.train[policy]:.1f}", f"{r.infer[policy]:.1f}"]
        cells.append(" / ".join(f"{r.warmup[p]:.0f}" for p in policies))
        out.add_row(*cells)
    return out


# -- trainkit against plain Keras ------------------------------------------------------------

PROBE = '''
import json, os, time
import keras


class EpochTimes(keras.callbacks.Callback):
    """Wall and process CPU seconds of each epoch's training phase (on_epoch_begin to the
    validation's start)."""

    def __init__(self):
        super().__init__()
        self.started = None
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self.started = (time.perf_counter(), time.process_time())

    def on_test_begin(self, logs=None):
        if self.started is not None:
            wall, cpu = self.started
            self.seconds.append([time.perf_counter() - wall, time.process_time() - cpu])
            self.started = None
            with open(os.environ["ZOO_PROBE_OUT"], "w") as out:
                json.dump(self.seconds, out)
'''


@dataclass
class Versus:
    name: str
    size: int
    precision: str
    steps: int
    batch_size: int
    gmacs: float = 0.0
    keras: float = 0.0  # images / s
    none: float = 0.0
    full: float = 0.0
    keras_cpu: float = 0.0  # images / CPU-second of the process (all its threads)
    none_cpu: float = 0.0
    full_cpu: float = 0.0
    peak_gflops: float = 0.0

    @property
    def achieved_gflops(self) -> float:
        return self.keras * 3 * 2 * self.gmacs  # (forward + backward) FLOPs per image x img/s

    def row(self) -> list[str]:
        def ratio(value: float) -> str:
            return f"{value:.1f} ({value / self.keras:.2f}x)" if self.keras else f"{value:.1f}"

        return [
            self.name,
            str(self.size),
            self.precision,
            f"{self.gmacs:.3f}",
            f"{self.keras:.1f}",
            ratio(self.none),
            ratio(self.full),
            f"{self.keras_cpu:.1f} / {self.none_cpu:.1f} ({self.none_cpu / self.keras_cpu:.2f}x)"
            f" / {self.full_cpu:.1f} ({self.full_cpu / self.keras_cpu:.2f}x)",
            f"{self.achieved_gflops:.1f}",
            f"{self.achieved_gflops / self.peak_gflops:.1%}" if self.peak_gflops else "-",
        ]


def data_config(size: int, limit: int) -> dict:
    return {"name": "digits", "limit": limit, "image_size": size}


def plain_keras_child(args) -> None:
    """In a process of its own (``--plain-keras-child``): plain Keras trains ``args.models[0]``,
    timed by the same probe callback as ``run.py``; writes GMACs and steps to ``--child-out``."""
    from omegaconf import OmegaConf
    from zoo_probe import EpochTimes  # the probe file, on the PYTHONPATH the parent gives

    from trainkit.data import load as load_data
    from trainkit.job import compile_model

    name, size, precision = args.models[0], args.image_size, args.policies[0]
    keras.mixed_precision.set_global_policy(precision)
    keras.utils.set_random_seed(0)
    data = load_data(
        data_config(size, args.limit), image_size=(size, size), batch_size=args.batch_size, seed=0
    )
    model = build_model(name, data.num_classes, input_shape=size)
    cfg = OmegaConf.create(
        {
            "optimizer": {"_target_": "keras.optimizers.Adam", "learning_rate": 1e-4},
            "trainer": {"steps_per_execution": 1, "jit_compile": "auto"},
        }
    )
    compile_model(model, cfg, data.num_classes)
    steps = data.steps("train")
    model.fit(
        data.train,
        validation_data=data.val,
        validation_steps=data.steps("val"),
        epochs=args.epochs,
        steps_per_epoch=steps,
        shuffle=False,  # the pipeline shuffles, as in the job
        callbacks=[EpochTimes()],
        verbose=0,
    )
    info = {"gmacs": count_macs(model) / 1e9, "steps": steps}
    Path(args.child_out).write_text(json.dumps(info), encoding="utf-8")


def plain_keras(
    name: str, size: int, args, precision: str, folder: Path
) -> tuple[float, float, float, int]:
    """(images / s and images / CPU-s of the best epochs after the first, GMACs, steps an
    epoch) of plain Keras: ``model.fit`` in a fresh process, as ``run.py`` gets, with
    validation each epoch and the training phase of each epoch timed by the same probe."""
    out, info = folder / f"{name}-keras.json", folder / f"{name}-keras-info.json"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(folder), str(ROOT)]),
        "ZOO_PROBE_OUT": str(out),
    }
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--plain-keras-child",
        "--models",
        name,
        "--image-size",
        str(size),
        "--limit",
        str(args.limit),
        "--epochs",
        str(args.epochs),
        "--batch-size",
        str(args.batch_size),
        "--policies",
        precision,
        "--child-out",
        str(info),
    ]
    done = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True)
    if done.returncode or not out.exists() or not info.exists():
        raise SystemExit(f"plain Keras failed ({done.returncode}):\n{done.stderr[-3000:]}")
    measured = json.loads(info.read_text())
    images = measured["steps"] * args.batch_size
    seconds = json.loads(out.read_text())[1:]  # the first epoch traces the step
    return (
        max(images / wall for wall, _ in seconds),
        max(images / cpu for _, cpu in seconds),
        measured["gmacs"],
        measured["steps"],
    )


def run_py(
    name: str, size: int, args, precision: str, stack: str, folder: Path, steps: int
) -> tuple[float, float]:
    """Images / s and images / CPU-s of the best epochs after the first of ``python run.py
    ... callbacks=stack``."""
    out = folder / f"{name}-{stack}.json"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(folder), str(ROOT)]),
        "ZOO_PROBE_OUT": str(out),
    }
    command = [
        sys.executable,
        str(ROOT / "run.py"),
        f"model={name}",
        f"data.image_size={size}",
        f"data.limit={args.limit}",
        f"trainer.epochs={args.epochs}",
        f"trainer.batch_size={args.batch_size}",
        f"trainer.precision={precision}",
        f"callbacks={stack}",
        "+callbacks.zz_epoch_times._target_=zoo_probe.EpochTimes",
        "tracking.log_model=false",
        f"hydra.run.dir={folder}/{name}-{stack}",
        f"tracking.uri=sqlite:///{folder}/mlflow.db",
    ]
    done = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True)
    if done.returncode or not out.exists():
        raise SystemExit(f"run.py failed ({done.returncode}):\n{done.stderr[-3000:]}")
    seconds = json.loads(out.read_text())[1:]  # the first epoch traces the step
    images = steps * args.batch_size
    return max(images / wall for wall, _ in seconds), max(images / cpu for _, cpu in seconds)


def versus(args) -> int:
    from benchmarks.peak import peak_gflops

    console = Console(width=max(Console().width, 180))  # a log file: the table's full width
    precision = args.policies[0]
    import tensorflow as tf

    dtype = tf.float32 if precision == "float32" else tf.bfloat16
    with console.status("measuring the matmul peak"):
        peak = max(peak_gflops(dtype, 2048, 1.0, xla=False), peak_gflops(dtype, 2048, 1.0, True))
    console.log(f"peak {dtype.name}: {peak:.0f} GFLOP/s")
    results = []
    with tempfile.TemporaryDirectory(prefix="trainkit-zoo-") as tmp:
        folder = Path(tmp)
        (folder / "zoo_probe.py").write_text(PROBE)
        for name in args.models or ["alexnet", "mobilenet_v2", "inception_v1"]:
            size = max(args.image_size, get_spec(name).min_size)
            result = Versus(name, size, precision, 0, args.batch_size, peak_gflops=peak)
            with console.status(f"{name}: plain Keras"):
                measured = plain_keras(name, size, args, precision, folder)
                result.keras, result.keras_cpu, result.gmacs, result.steps = measured
            for stack in ("none", "full"):
                with console.status(f"{name}: run.py callbacks={stack}"):
                    images = run_py(name, size, args, precision, stack, folder, result.steps)
                    setattr(result, stack, images[0])
                    setattr(result, f"{stack}_cpu", images[1])
            console.log(
                f"{name}: keras {result.keras:.1f}, none {result.none:.1f}, "
                f"full {result.full:.1f} img/s"
            )
            results.append(result)
    title = (
        f"trainkit against plain Keras: digits, {args.limit} training images, batch "
        f"{args.batch_size}, best epoch of {args.epochs - 1} after the first; peak "
        f"{peak:.0f} GFLOP/s ({dtype.name})"
    )
    out = Table(title=title)
    for column in (
        "model",
        "input",
        "precision",
        "GMACs",
        "plain Keras img/s",
        "run.py none img/s",
        "run.py full img/s",
        "img per CPU-s: Keras / none / full",
        "achieved GFLOP/s",
        "of peak",
    ):
        out.add_column(column, justify="left" if column == "model" else "right")
    for result in results:
        out.add_row(*result.row())
    console.print(out)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=None, help="default: the whole zoo")
    parser.add_argument(
        "--image-size", type=int, default=96, help="side length (raised to a model's minimum)"
    )
    parser.add_argument("--steps", type=int, default=3, help="timed steps after the warm-up")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--policies", nargs="+", default=list(POLICIES), choices=POLICIES)
    parser.add_argument("--vs-keras", action="store_true", help="trainkit against plain Keras")
    parser.add_argument("--limit", type=int, default=640, help="--vs-keras: training images")
    parser.add_argument("--epochs", type=int, default=3, help="--vs-keras: epochs (>= 2)")
    # the plain-Keras process that --vs-keras starts for each model
    parser.add_argument("--plain-keras-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--child-out", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.plain_keras_child:
        plain_keras_child(args)
        return 0
    if args.vs_keras:
        if args.policies == list(POLICIES):
            args.policies = ["float32"]
        return versus(args)

    console = Console()
    names = args.models or available_models()
    results = []
    for name in names:
        size = max(args.image_size, get_spec(name).min_size)
        with console.status(f"benchmarking {name} at {size}x{size}"):
            start = time.perf_counter()
            results.append(
                bench(name, size, args.steps, args.batch_size, args.policies, args.classes)
            )
        console.log(f"{name}: {time.perf_counter() - start:.0f} s")
    console.print(table(results, args.policies, args.batch_size, args.steps))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
