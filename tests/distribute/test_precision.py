"""trainer.precision=auto chooses from the device facts (no GPU needed to test the rule)."""

from __future__ import annotations

import logging

import keras
import pytest

from trainkit import runtime


@pytest.mark.parametrize(
    ("gpus", "cpu_bf16", "expected"),
    [
        ([(8, 0)], False, "mixed_bfloat16"),  # A100
        ([(9, 0), (8, 6)], True, "mixed_bfloat16"),  # H100 + RTX 3090
        ([(7, 5)], True, "mixed_float16"),  # T4: the GPU decides, not the CPU
        ([(8, 0), (7, 0)], False, "mixed_float16"),  # the weakest GPU decides
        ([(6, 1)], False, "mixed_float16"),
        ([], True, "mixed_bfloat16"),  # AMX / AVX-512 BF16 CPU
        ([], False, "float32"),
    ],
)
def test_auto_precision_rule(gpus, cpu_bf16, expected) -> None:
    policy, reason = runtime.choose_precision(gpus, cpu_bf16)
    assert policy == expected
    assert reason  # what the job logs


def test_auto_precision_is_logged_and_set(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="trainkit"):
        runtime.set_precision("auto")
    expected, _ = runtime.choose_precision(runtime.gpu_capabilities(), runtime.cpu_has_bf16_units())
    assert keras.mixed_precision.global_policy().name == expected
    assert f"precision auto: {expected} (" in caplog.text
