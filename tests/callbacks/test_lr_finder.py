"""LRFinder on a real small model: a suggestion where the loss falls, the state put back."""

from __future__ import annotations

import json
import math

import keras
import numpy as np
import pytest
from sklearn.datasets import load_digits

from callbacks.lr_finder import LRFinder, suggest
from tests.callbacks.cb_testing import assert_weights_equal
from trainkit.context import RunContext


def digits_mlp():
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    return model


def test_suggestion_lies_where_the_loss_falls_and_state_is_restored(tmp_path):
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype("float32")
    model = digits_mlp()
    model.optimizer.build(model.trainable_variables)
    before = model.get_weights()
    optimizer_before = [v.numpy() for v in model.optimizer.variables]
    finder = LRFinder(start_lr=1e-5, end_lr=10.0, num_steps=120, verbose=0)
    finder.set_context(RunContext(run_dir=tmp_path))
    history = model.fit(x, y, batch_size=32, epochs=10, shuffle=True, verbose=0, callbacks=[finder])

    # the test ended the fit early (57 steps an epoch) and put everything back
    assert len(history.history["loss"]) < 10
    assert_weights_equal(model.get_weights(), before)
    for variable, value in zip(model.optimizer.variables, optimizer_before, strict=True):
        np.testing.assert_array_equal(variable.numpy(), value)
    assert int(model.optimizer.iterations.numpy()) == 0
    assert history.history["lr_find_suggestion"][-1] == finder.suggested_lr

    lrs, losses = np.array(finder.lrs), np.array(finder.losses)
    assert finder.stop_cause in ("diverged", "num_steps", "non_finite")
    assert lrs[0] == pytest.approx(1e-5) and np.all(np.diff(lrs) > 0)
    start_loss, best = losses[0], np.nanmin(losses)
    assert best < 0.75 * start_loss  # the ramp found rates at which the model learns
    i = int(np.argmin(abs(np.log(lrs) - math.log(finder.suggested_lr))))
    # where the loss falls: below the starting loss, still above the minimum, and lower a few
    # steps later than a few steps earlier
    assert losses[i] < start_loss
    assert lrs[i] < lrs[int(np.nanargmin(losses))]
    assert losses[min(i + 5, len(losses) - 1)] < losses[max(i - 5, 0)]

    saved = json.loads((tmp_path / "lr_finder.json").read_text())
    assert saved["suggested_lr"] == finder.suggested_lr
    assert saved["method"] == "valley"
    assert set(saved["suggestions"]) == {"valley", "steep", "minimum"}
    assert len(saved["lrs"]) == len(saved["losses"]) == len(finder.lrs)
    png = (tmp_path / "lr_finder.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 5000


def test_suggest_on_a_known_curve():
    # flat, then falling between 1e-4 and 1e-2 (steepest at 1e-3), minimum at 1e-1, then up
    lrs = np.logspace(-6, 1, 141)
    t = np.log10(lrs)
    losses = 2.0 - 1.5 / (1 + np.exp(-3 * (t + 3))) + np.where(t > -1, 4 * (t + 1) ** 2, 0.0)
    result = suggest(list(lrs), list(losses))
    assert 1e-4 < result["valley"] < 1e-2
    assert result["steep"] == pytest.approx(1e-3, rel=0.15)
    assert result["minimum"] == pytest.approx(lrs[np.argmin(losses)] / 10)


def test_suggest_with_too_few_points_gives_none():
    assert suggest([1e-3, 1e-2], [1.0, 0.5]) == {"valley": None, "steep": None, "minimum": None}
