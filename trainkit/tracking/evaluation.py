"""Test-split predictions, computed once per trained model and shared by the callbacks.

Both the MLflow and the TensorBoard callbacks draw the confusion matrix of ``ctx.test_data``;
the pass over the test split is paid once: the result is kept in ``ctx.extras`` under a private
key, tagged with the model and its optimizer step so a model trained further is evaluated anew.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from trainkit.context import RunContext

_CACHE_KEY = "_trainkit.test_confusion"


def _labels(y: Any) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim > 1 and y.shape[-1] > 1:  # one-hot
        return y.argmax(axis=-1).reshape(-1)
    return y.reshape(-1).astype(np.int64)


def _classes(p: Any) -> np.ndarray:
    p = np.asarray(p)
    if p.ndim > 1 and p.shape[-1] > 1:
        return p.argmax(axis=-1).reshape(-1)
    return (p.reshape(-1) > 0.5).astype(np.int64)  # one sigmoid unit


def _version(model: Any) -> tuple[int, int]:
    optimizer = getattr(model, "optimizer", None)
    step = int(optimizer.iterations.numpy()) if optimizer is not None else 0
    return id(model), step


def confusion_on_test_split(context: RunContext, model: Any) -> np.ndarray | None:
    """The confusion matrix (rows = true class) of ``model`` on ``context.test_data``."""
    dataset = context.test_data
    if dataset is None or model is None:
        return None
    version = _version(model)
    cached = context.extras.get(_CACHE_KEY)
    if cached is not None and cached[0] == version:
        return cached[1]
    num_classes = context.num_classes
    matrix = np.zeros((max(num_classes, 1),) * 2, dtype=np.int64)
    # Only the chief of a multi-worker job gets here: a predict step's collectives would wait
    # for workers that never run it, so the model is called directly on this worker.
    multi_worker = context.strategy == "multi_worker"
    for batch in dataset:
        x, y = batch[0], batch[1]
        predicted = _classes(
            model(x, training=False) if multi_worker else model.predict_on_batch(x)
        )
        true = _labels(y)
        size = int(max(true.max(initial=0), predicted.max(initial=0))) + 1
        if size > matrix.shape[0]:  # class_names missing or short: grow to what the data says
            grown = np.zeros((size, size), dtype=np.int64)
            grown[: matrix.shape[0], : matrix.shape[1]] = matrix
            matrix = grown
        np.add.at(matrix, (true, predicted), 1)
    context.extras[_CACHE_KEY] = (version, matrix)
    return matrix
