"""Process-wide settings a job makes before it builds anything: seed and numeric precision."""

from __future__ import annotations

import os

import keras

from trainkit.errors import ConfigError

PRECISIONS = ("auto", "float32", "mixed_bfloat16", "mixed_float16")


def cpu_has_bf16_units() -> bool:
    """Whether this CPU multiplies bfloat16 in hardware (Intel AMX or AVX-512 BF16)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            flags = next((line for line in info if line.startswith("flags")), "")
    except OSError:
        return False
    return any(flag in flags.split() for flag in ("amx_bf16", "avx512_bf16"))


def resolve_precision(precision: str) -> str:
    """``auto``: mixed_bfloat16 where the CPU has bf16 units (3-4x faster there), else float32."""
    if precision != "auto":
        return precision
    return "mixed_bfloat16" if cpu_has_bf16_units() else "float32"


def quiet_tensorflow() -> None:
    """Hide TensorFlow's C++ info lines; must run before tensorflow is imported."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def set_seed(seed: int | None) -> None:
    """Seed Python, NumPy and the backend; None leaves them random."""
    if seed is not None:
        keras.utils.set_random_seed(int(seed))


def set_precision(precision: str) -> None:
    """Set Keras's global dtype policy. ``mixed_bfloat16`` uses the CPU's AMX/AVX-512 bf16 units;
    ``auto`` picks it when the CPU has them.

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
