"""Process-wide settings a job makes before it builds anything: seed and numeric precision."""

from __future__ import annotations

import logging
import os

import keras

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


def quiet_tensorflow() -> None:
    """Hide TensorFlow's C++ info lines; must run before tensorflow is imported."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def set_seed(seed: int | None) -> None:
    """Seed Python, NumPy and the backend; None leaves them random."""
    if seed is not None:
        keras.utils.set_random_seed(int(seed))


def set_precision(precision: str) -> None:
    """Set Keras's global dtype policy; ``auto`` chooses by the devices
    (:func:`choose_precision`).

    Models keep their classifier in float32 (see ``trainkit.models.heads``), so losses and
    probabilities stay float32 under any policy.
    """
    if precision not in PRECISIONS:
        raise ConfigError(
            f"unknown trainer.precision '{precision}': choose one of {', '.join(PRECISIONS)}"
        )
    keras.mixed_precision.set_global_policy(resolve_precision(precision))


def configure(trainer: dict) -> None:
    set_seed(trainer.get("seed"))
    set_precision(trainer.get("precision", "float32"))
