"""Fixtures of the model-zoo tests: every test starts from a fresh Keras session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import keras
import numpy as np
import pytest
import yaml

MODEL_CONF = Path(__file__).resolve().parents[2] / "conf" / "model"


@pytest.fixture(autouse=True)
def _fresh_session() -> Iterator[None]:
    """Reset Keras' global state (layer names) after each test.

    Without the garbage collection clear_session does by default: it costs up to a second per
    test, more than most tests take, and Python's own collector frees the models soon enough.
    """
    yield
    keras.backend.clear_session(free_memory=False)


def model_options(name: str) -> dict:
    """The options of ``conf/model/<name>.yaml``, as the job passes them to build_model."""
    return yaml.safe_load((MODEL_CONF / f"{name}.yaml").read_text())["options"] or {}


def images(size: int | tuple[int, int], n: int = 2, seed: int = 0) -> np.ndarray:
    """``n`` random RGB images in [0, 255], the models' input range."""
    height, width = (size, size) if isinstance(size, int) else size
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 255, (n, height, width, 3)).astype("float32")


def trainable_count(model: keras.Model) -> int:
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))
