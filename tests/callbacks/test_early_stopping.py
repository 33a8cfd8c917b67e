"""EarlyStopping stops at the epoch and for the reason a scripted metric dictates."""

from __future__ import annotations

import math

import pytest

from callbacks.early_stopping import EarlyStopping
from tests.callbacks.cb_testing import (
    Recorder,
    Script,
    assert_weights_equal,
    make_model,
    regression_data,
)

NAN = math.nan


def run(values, epochs=None, **options):
    """Fit with ``val_loss``/``val_acc`` scripted before the early stopping, recorded after."""
    x, y = regression_data(16)
    model = make_model()
    monitor = options.pop("monitor", "val_loss")
    stopper = EarlyStopping(monitor=monitor, verbose=0, **options)
    recorder = Recorder(weights=True)
    epochs = epochs or len(values)
    history = model.fit(
        x,
        y,
        batch_size=8,
        epochs=epochs,
        verbose=0,
        callbacks=[Script(monitor, values), stopper, recorder],
    )
    return model, stopper, recorder, history


@pytest.mark.parametrize(
    ("values", "options", "stopped_epoch", "reason", "best_epoch"),
    [
        # best 0.8 at epoch 1, then two epochs without improvement
        ([1.0, 0.8, 0.9, 0.85, 0.7, 0.6], {"patience": 2}, 3, "patience", 1),
        # min_delta: 0.79 is not better than 0.8 by 0.05
        ([1.0, 0.8, 0.79, 0.78, 0.1], {"patience": 2, "min_delta": 0.05}, 3, "patience", 1),
        (
            [0.5, 0.7, 0.91, 0.95],
            {"monitor": "val_acc", "mode": "max", "stopping_threshold": 0.9},
            2,
            "threshold",
            2,
        ),
        ([1.0, 2.0, 11.0, 0.5], {"patience": 5, "divergence_threshold": 10.0}, 2, "divergence", 0),
        ([1.0, 0.9, NAN, 0.5], {"patience": 5}, 2, "non_finite", 1),
        # a NaN during the start_from_epoch warm-up still stops
        ([NAN, 0.9, 0.8], {"patience": 5, "start_from_epoch": 2}, 0, "non_finite", None),
    ],
)
def test_stops_at_scripted_epoch_for_the_reason(values, options, stopped_epoch, reason, best_epoch):
    model, stopper, recorder, history = run(values, **options)
    monitor = options.get("monitor", "val_loss")
    assert stopper.stopped_epoch == stopped_epoch
    assert stopper.stop_reason == reason
    assert stopper.best_epoch == best_epoch
    assert len(history.history["loss"]) == stopped_epoch + 1
    assert recorder.epoch_logs[-1]["stop_reason"] == reason
    assert all("stop_reason" not in logs for logs in recorder.epoch_logs[:-1])
    if best_epoch is not None:
        assert stopper.best_value == values[best_epoch]
        assert recorder.epoch_logs[-1]["best_epoch"] == best_epoch
        assert recorder.epoch_logs[-1][f"best_{monitor}"] == values[best_epoch]


def test_runs_to_the_end_while_improving_and_baseline_keeps_counting():
    _, stopper, recorder, history = run([1.0, 0.9, 0.8, 0.7], patience=1)
    assert stopper.stop_reason is None and stopper.stopped_epoch is None
    assert len(history.history["loss"]) == 4
    assert [logs["best_epoch"] for logs in recorder.epoch_logs] == [0, 1, 2, 3]
    # Keras's baseline: improving epochs that do not beat it still use up the patience.
    _, stopper, _, _ = run([1.0, 0.9, 0.95, 0.8], patience=2)
    assert stopper.stop_reason is None
    _, stopper, _, _ = run([1.0, 0.9, 0.95, 0.8], patience=2, baseline=0.5)
    assert (stopper.stop_reason, stopper.stopped_epoch) == ("patience", 2)


@pytest.mark.parametrize("values", [[1.0, 0.5, 0.9, 0.95, 0.99], [1.0, 0.5, 0.7, NAN, 0.1]])
def test_restores_the_best_weights(values):
    model, stopper, recorder, _ = run(values, patience=3, restore_best_weights=True)
    assert stopper.best_epoch == 1
    assert_weights_equal(model.get_weights(), recorder.epoch_weights[1])


def test_instance_is_reusable_state_resets():
    x, y = regression_data(16)
    stopper = EarlyStopping(patience=1, verbose=0)
    make_model().fit(x, y, epochs=3, verbose=0, callbacks=[Script("val_loss", [1, 2, 3]), stopper])
    assert stopper.stop_reason == "patience"
    make_model().fit(x, y, epochs=3, verbose=0, callbacks=[Script("val_loss", [3, 2, 1]), stopper])
    assert (stopper.stop_reason, stopper.stopped_epoch, stopper.best_epoch) == (None, None, 2)


def test_prints_one_line_when_it_stops(capsys):
    x, y = regression_data(16)
    stopper = EarlyStopping(patience=1)
    make_model().fit(x, y, epochs=3, verbose=0, callbacks=[Script("val_loss", [1, 2, 3]), stopper])
    lines = [line for line in capsys.readouterr().out.splitlines() if "EarlyStopping" in line]
    assert len(lines) == 1 and "epoch 2 (patience" in lines[0]
