"""This machine's dense matmul peak through TensorFlow, in float32 and bfloat16.

    python benchmarks/peak.py [--size 4096] [--seconds 3]

The peak is what a training step could reach at best: ``benchmarks/zoo.py`` divides each
model's achieved training FLOP/s by the peak of its precision. A square matmul of ``--size`` is
run in a graph loop for about ``--seconds``, once with TensorFlow's own kernels (oneDNN) and
once compiled by XLA, and counted as ``2 n^3`` FLOPs; the best of three timings is reported,
because a shared machine only ever slows a run down. The peak is the better of the two.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import tensorflow as tf  # noqa: E402


def peak_gflops(dtype: tf.DType, size: int, seconds: float, xla: bool) -> float:
    a = tf.random.uniform((size, size), dtype=tf.float32)
    b = tf.random.uniform((size, size), dtype=tf.float32)
    a, b = tf.cast(a, dtype), tf.cast(b, dtype)

    @tf.function(jit_compile=xla)
    def chain(x: tf.Tensor, y: tf.Tensor, n: tf.Tensor) -> tf.Tensor:
        # A loop of dependent matmuls, so nothing can be skipped or run once for all.
        def body(i: tf.Tensor, acc: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            return i + 1, tf.matmul(acc, y) * tf.cast(1.0 / size, dtype)

        return tf.while_loop(lambda i, _: i < n, body, (tf.constant(0), x))[1]

    chain(a, b, tf.constant(1)).numpy()  # compile
    start = time.perf_counter()
    chain(a, b, tf.constant(1)).numpy()
    one = max(time.perf_counter() - start, 1e-4)
    n = max(1, int(seconds / one))
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        chain(a, b, tf.constant(n)).numpy()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 * n / best / 1e9


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args(argv)
    from rich.console import Console
    from rich.table import Table

    title = f"dense matmul peak, {args.size}x{args.size}, GFLOP/s"
    table = Table("dtype", "TF kernels (oneDNN)", "XLA", "peak", title=title)
    for name, dtype in (("float32", tf.float32), ("bfloat16", tf.bfloat16)):
        tf_kernels = peak_gflops(dtype, args.size, args.seconds, xla=False)
        xla = peak_gflops(dtype, args.size, args.seconds, xla=True)
        table.add_row(name, f"{tf_kernels:,.0f}", f"{xla:,.0f}", f"{max(tf_kernels, xla):,.0f}")
    Console().print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
