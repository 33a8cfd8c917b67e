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
"""

from __future__ import annotations

import argparse
import math
import os
import time
from dataclasses import dataclass, field

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

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
    args = parser.parse_args(argv)

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
