"""Process-wide settings a job makes before it builds anything: a quiet TensorFlow, seed and
numeric precision.

Keras (hence TensorFlow) is imported inside the functions, so that :func:`quiet_tensorflow`
can run before TensorFlow is first imported.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import threading
from collections.abc import Callable, Iterator

from trainkit.errors import ConfigError

log = logging.getLogger("trainkit")

PRECISIONS = ("auto", "float32", "mixed_bfloat16", "mixed_float16")


def cpu_has_bf16_units() -> bool:
    """Whether this CPU multiplies bfloat16 in hardware (Intel AMX or AVX-512 BF16)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            flags = next((line for line in info if line.startswith("flags")), "")
    except OSError:
        return False
    return any(flag in flags.split() for flag in ("amx_bf16", "avx512_bf16"))


def choose_precision(gpu_capabilities: list[tuple[int, int]], cpu_bf16: bool) -> tuple[str, str]:
    """What ``trainer.precision=auto`` picks from the device facts, and why.

    Args:
        gpu_capabilities: the CUDA compute capability (major, minor) of each visible GPU.
        cpu_bf16: whether the CPU has bfloat16 units (AMX or AVX-512 BF16).

    Returns:
        (policy, reason): ``mixed_bfloat16`` when every GPU has compute capability 8.0 or more
        (Ampere and later: bf16 tensor cores), ``mixed_float16`` on older GPUs (fp16 tensor
        cores since 7.0; Keras adds loss scaling), and without a GPU ``mixed_bfloat16`` on a
        bf16 CPU (3-4x faster there), else ``float32``.
    """
    if gpu_capabilities:
        lowest = min(gpu_capabilities)
        shown = f"GPU compute capability {lowest[0]}.{lowest[1]}"
        if lowest >= (8, 0):
            return "mixed_bfloat16", f"{shown} >= 8.0"
        return "mixed_float16", f"{shown} < 8.0"
    if cpu_bf16:
        return "mixed_bfloat16", "no GPU; the CPU has bfloat16 units"
    return "float32", "no GPU; the CPU has no bfloat16 units"


def gpu_capabilities() -> list[tuple[int, int]]:
    """Compute capability of each GPU TensorFlow sees ((0, 0) when it does not say)."""
    import tensorflow as tf

    found = []
    for gpu in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(gpu) or {}
        found.append(tuple(details.get("compute_capability") or (0, 0)))
    return found


def resolve_precision(precision: str) -> str:
    """``auto``: see :func:`choose_precision` (logged); anything else as given."""
    if precision != "auto":
        return precision
    policy, reason = choose_precision(gpu_capabilities(), cpu_has_bf16_units())
    log.info("precision auto: %s (%s)", policy, reason)
    return policy


TF_LOGS_ENV = "TRAINKIT_TF_LOGS"

# What TensorFlow 2.21 prints while it is imported, whatever TF_CPP_MIN_LOG_LEVEL says: its
# messages go through absl's C++ logging (which reads no environment variable, and warns that
# nothing initialised it), twice, once per shared library that carries a copy of absl:
#   WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
#   I0000 00:00:1795789496.423992   17303 port.cc:153] oneDNN custom operations are on. ...
_ABSL_PREAMBLE = "WARNING: All log messages before absl::InitializeLog()"
# absl's line format: severity letter, MMDD hh:mm:ss.micros (before absl is initialised: 0000
# 00:00:<epoch seconds>), thread id, file:line]. Info (I)
# and warning (W) lines are dropped, as TF_CPP_MIN_LOG_LEVEL=2 means; errors (E, F) stay.
_ABSL_QUIET_LINE = re.compile(rb"^[IW]\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ \S+:\d+\] ")


def tf_logs_wanted() -> bool:
    """``TRAINKIT_TF_LOGS=1`` (or true/yes/on) shows TensorFlow's start-up messages."""
    return os.environ.get(TF_LOGS_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def quiet_tensorflow() -> None:
    """Import TensorFlow without its start-up chatter, unless ``TRAINKIT_TF_LOGS=1``.

    Sets ``TF_CPP_MIN_LOG_LEVEL=2`` (unless set) for what honours it, and imports TensorFlow
    with the process's stderr (file descriptor 2, where C++ writes) passing through a filter
    that drops absl's preamble and info/warning lines; anything else written meanwhile (Python
    warnings, errors) goes through. Does nothing once TensorFlow is imported: call it first.
    Keras's imports that a job does not use are deferred to their first use
    (:mod:`trainkit.deferred_imports`).
    """
    from trainkit.deferred_imports import defer_unused_imports

    defer_unused_imports()
    if tf_logs_wanted():
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0")
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "tensorflow" in sys.modules:
        return
    with drop_stderr_lines(_is_tf_chatter):
        import tensorflow  # noqa: F401


def _is_tf_chatter(line: bytes) -> bool:
    return line.startswith(_ABSL_PREAMBLE.encode()) or bool(_ABSL_QUIET_LINE.match(line))


@contextlib.contextmanager
def drop_stderr_lines(drop: Callable[[bytes], bool]) -> Iterator[None]:
    """Within the block, lines written to file descriptor 2 for which ``drop`` is true vanish.

    fd 2 is pointed at a pipe that a thread drains; at the block's end fd 2 is restored and the
    kept lines are written to it, in order. For a short block only (an import): nothing
    reaches the terminal until it ends.
    """
    sys.stderr.flush()
    try:
        saved = os.dup(2)
        read_end, write_end = os.pipe()
    except OSError:  # no fd 2 (a daemon): nothing to filter
        yield
        return
    chunks: list[bytes] = []

    def drain() -> None:
        while data := os.read(read_end, 65536):
            chunks.append(data)

    reader = threading.Thread(target=drain, name="stderr-filter", daemon=True)
    reader.start()
    os.dup2(write_end, 2)
    os.close(write_end)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)  # the pipe's last write end closes: the reader sees its end
        reader.join(timeout=5)
        os.close(saved)
        os.close(read_end)
        kept = [ln for ln in b"".join(chunks).splitlines(keepends=True) if not drop(ln)]
        if kept:
            os.write(2, b"".join(kept))


def set_seed(seed: int | None) -> None:
    """Seed Python, NumPy and the backend; None leaves them random."""
    import keras

    if seed is not None:
        keras.utils.set_random_seed(int(seed))


def set_precision(precision: str) -> None:
    """Set Keras's global dtype policy; ``auto`` chooses by the devices
    (:func:`choose_precision`).

    Models keep their classifier in float32 (see ``trainkit.models.heads``), so losses and
    probabilities stay float32 under any policy.
    """
    import keras

    if precision not in PRECISIONS:
        raise ConfigError(
            f"unknown trainer.precision '{precision}': choose one of {', '.join(PRECISIONS)}"
        )
    keras.mixed_precision.set_global_policy(resolve_precision(precision))


def configure(trainer: dict) -> None:
    set_seed(trainer.get("seed"))
    set_precision(trainer.get("precision", "float32"))
