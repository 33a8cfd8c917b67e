"""EarlyStopping stops at the epoch and for the reason a scripted metric dictates."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest

from callbacks.early_stopping import EarlyStopping
from tests.callbacks.cb_testing import (
    ModelPool,
    Recorder,
    Script,
    assert_weights_equal,
    batches,
    regression_data,
)

NAN = math.nan

# The subject is the callback, not the model or the input: one model per set of options, reset
# before each fit (ModelPool), and 16 samples as a dataset of 2 batches of 8.
MODELS = ModelPool()
DATA = batches(*regression_data(16))


def run(values, epochs=None, **options):
    """Fit with ``val_loss``/``val_acc`` scripted before the early stopping, recorded after."""
    model = MODELS.get()
    monitor = options.pop("monitor", "val_loss")
    stopper = EarlyStopping(monitor=monitor, verbose=0, **options)
    recorder = Recorder(weights=True)
    epochs = epochs or len(values)
    history = model.fit(
        DATA,
        epochs=epochs,
        shuffle=False,
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
        ([NAN, 0.9, 0.8], {"patience": 5, "start_from_epoch": 2}, 0, "non_finite", 0),
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
    if stopper.best is not None:
        assert stopper.best_value == values[best_epoch]
        assert recorder.epoch_logs[-1]["best_epoch"] == best_epoch
        assert recorder.epoch_logs[-1][f"best_{monitor}"] == values[best_epoch]


def test_runs_to_the_end_while_improving_and_baseline_keeps_counting():
    _, stopper, recorder, history = run([1.0, 0.9, 0.8, 0.7], patience=1)
    # Keras's types: stopped_epoch 0 when it did not stop
    assert stopper.stop_reason is None and stopper.stopped_epoch == 0
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


def test_best_weights_are_a_snapshot_read_as_numpy_with_the_best_epochs_values():
    """The best epoch's weights are kept as a snapshot while training goes on (no numpy copy
    at the epoch end) and read as Keras has them: a list of numpy arrays, the values of the
    best epoch, not of the steps that ran after it."""
    held = []

    class Peek(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            held.append(stopper.__dict__["_best_snapshot"] is not None)

    model = MODELS.get()
    stopper = EarlyStopping(patience=5, restore_best_weights=True)
    recorder = Recorder(weights=True)
    values = [1.0, 0.5, 0.9, 0.95]  # best at epoch 1, then two epochs of training
    model.fit(
        DATA,
        epochs=4,
        shuffle=False,
        verbose=0,
        callbacks=[Script("val_loss", values), stopper, recorder, Peek()],
    )
    assert held == [True] * 4  # not converted at the epoch ends
    best = stopper.best_weights  # converted by on_train_end's restore
    assert isinstance(best, list) and all(type(w) is np.ndarray for w in best)
    assert_weights_equal(best, recorder.epoch_weights[1])
    assert not np.allclose(recorder.epoch_weights[3][0], recorder.epoch_weights[1][0])
    assert_weights_equal(model.get_weights(), recorder.epoch_weights[1])
    # Keras's attribute is writable: what is set is what is read
    stopper.best_weights = None
    assert stopper.best_weights is None


def test_instance_is_reusable_state_resets():
    stopper = EarlyStopping(patience=1, verbose=0)
    fit = {"epochs": 3, "shuffle": False, "verbose": 0}
    MODELS.get().fit(DATA, callbacks=[Script("val_loss", [1, 2, 3]), stopper], **fit)
    assert stopper.stop_reason == "patience"
    MODELS.get().fit(DATA, callbacks=[Script("val_loss", [3, 2, 1]), stopper], **fit)
    assert (stopper.stop_reason, stopper.stopped_epoch, stopper.best_epoch) == (None, 0, 2)


def test_prints_one_line_when_it_stops(capsys):
    stopper = EarlyStopping(patience=1, verbose=1)
    MODELS.get().fit(
        DATA, epochs=3, shuffle=False, verbose=0, callbacks=[Script("val_loss", [1, 2, 3]), stopper]
    )
    lines = [line for line in capsys.readouterr().out.splitlines() if "EarlyStopping" in line]
    assert len(lines) == 1 and "epoch 2 (patience" in lines[0]


# -- side by side with keras.callbacks.EarlyStopping ------------------------------------------


def keras_docs_model(seed: int = 0) -> keras.Model:
    """The model of Keras's EarlyStopping docstring, built on its input shape as ``fit`` would
    build it (for ModelPool, which builds the optimizer before the first fit)."""
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.layers.Dense(10)])
    model.compile(keras.optimizers.SGD(), loss="mse")
    model.build((None, 20))
    return model


DOCS_MODELS = ModelPool(keras_docs_model)


def keras_docs_fit(callback):
    """The example of Keras's EarlyStopping docstring (its arrays, shuffled, batches of 1)."""
    model = DOCS_MODELS.get()
    history = model.fit(
        np.arange(100).reshape(5, 20),
        np.zeros(5),
        epochs=10,
        batch_size=1,
        callbacks=[callback],
        verbose=0,
    )
    return model, history


def test_keras_docs_example_runs_four_epochs_as_with_keras():
    theirs = keras.callbacks.EarlyStopping(monitor="loss", patience=3)
    _, keras_history = keras_docs_fit(theirs)
    assert len(keras_history.history["loss"]) == 4
    # the example's loss overflows to inf at epoch 3: without the added non-finite check the
    # run is Keras's; with it (the default) it stops there and says why
    plain = EarlyStopping(monitor="loss", patience=3, check_finite=False)
    _, history = keras_docs_fit(plain)
    assert len(history.history["loss"]) == 4
    assert (plain.stopped_epoch, plain.wait, plain.best) == (
        theirs.stopped_epoch,
        theirs.wait,
        theirs.best,
    )
    checked = EarlyStopping(monitor="loss", patience=3)
    _, history = keras_docs_fit(checked)
    assert (len(history.history["loss"]), checked.stop_reason) == (3, "non_finite")


def side_by_side(values, options, metric=None, monitor="val_loss"):
    results = []
    for cls in (EarlyStopping, keras.callbacks.EarlyStopping):
        model = MODELS.get(seed=0)
        callback = cls(monitor=monitor, **options)
        history = model.fit(
            DATA,
            epochs=len(values),
            shuffle=False,
            verbose=0,
            callbacks=[Script(monitor, values), callback],
        )
        results.append((callback, model.get_weights(), len(history.history["loss"])))
    return results


KERAS_OPTIONS = [
    {"patience": 2},
    {"patience": 1, "min_delta": 0.1},
    {"patience": 2, "baseline": 0.5},
    {"patience": 1, "restore_best_weights": True},
    {"patience": 1, "restore_best_weights": True, "start_from_epoch": 2},
    {"patience": 0, "mode": "max"},
    {"patience": 3, "restore_best_weights": True, "verbose": 1},
]
SCRIPTS = [[1.0, 0.8, 0.9, 0.85, 0.7, 0.6], [1.0, 0.9, 0.8, 0.7, 0.6, 0.5], [0.5, 0.4, 0.6]]


@pytest.mark.parametrize("options", KERAS_OPTIONS)
@pytest.mark.parametrize("values", SCRIPTS)
def test_keras_options_stop_and_restore_as_keras(values, options):
    (ours, ours_weights, ours_epochs), (theirs, keras_weights, keras_epochs) = side_by_side(
        values, options
    )
    assert ours_epochs == keras_epochs
    for name in ("stopped_epoch", "wait", "best_epoch", "best", "min_delta", "patience"):
        assert getattr(ours, name) == getattr(theirs, name), name
        assert type(getattr(ours, name)) is type(getattr(theirs, name)), name
    assert (ours.best_weights is None) == (theirs.best_weights is None)
    assert_weights_equal(ours_weights, keras_weights)
    # what Keras code reads after fit works the same
    assert (ours.stopped_epoch > 0) == (theirs.stopped_epoch > 0)


def f1_model(average: str | None, seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    model.compile("sgd", "categorical_crossentropy", metrics=[keras.metrics.F1Score(average)])
    return model


F1_MODELS = ModelPool(f1_model)
F1_X = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
F1_DATA = batches(F1_X, keras.utils.to_categorical((F1_X[:, 0] > 0).astype(int), 2), 16)


def f1_fit(callback, average):
    model = F1_MODELS.get(average=average)
    model.fit(F1_DATA, epochs=4, shuffle=False, verbose=0, callbacks=[callback])
    return model


def test_f1_score_array_values_as_keras():
    # macro F1: a 0-d array; the same decisions and the same kind of best as Keras's
    ours = EarlyStopping(monitor="f1_score", patience=1, restore_best_weights=True)
    theirs = keras.callbacks.EarlyStopping(
        monitor="f1_score", patience=1, restore_best_weights=True
    )
    assert_weights_equal(f1_fit(ours, "macro").get_weights(), f1_fit(theirs, "macro").get_weights())
    assert (ours.stopped_epoch, ours.wait, ours.best_epoch) == (
        theirs.stopped_epoch,
        theirs.wait,
        theirs.best_epoch,
    )
    assert np.shape(ours.best) == np.shape(theirs.best) == ()
    # one F1 per class: Keras's comparison is ambiguous and raises; ours compares the mean
    with pytest.raises(ValueError):
        f1_fit(keras.callbacks.EarlyStopping(monitor="f1_score", patience=1), None)
    per_class = EarlyStopping(monitor="f1_score", patience=1)
    f1_fit(per_class, None)
    assert np.shape(per_class.best) == (2,)
    assert per_class.stop_reason in (None, "patience")


@pytest.mark.parametrize("mode", ["min", "max"])
@pytest.mark.parametrize("min_delta", [0, 0.1, 1e-9])
def test_float_comparison_is_keras_ops_comparison(mode, min_delta):
    """Two Python floats compare without an eager op, with the result Keras's op gives: values
    equal in float32 but not in float64 included."""
    stopper = EarlyStopping(mode=mode, min_delta=min_delta)
    stopper._set_monitor_op()
    close = float(np.nextafter(np.float32(0.5), np.float32(1))) - 1e-9  # rounds to its float32
    pairs = [(0.5, 0.4), (0.4, 0.5), (0.5, 0.5), (0.3, 0.30000001), (0.30000001, 0.3)]
    pairs += [(close, 0.5), (0.5, close), (1.0, 1.0 + 1e-9), (1.0 + 1e-9, 1.0)]
    for value, reference in pairs:
        expected = bool(stopper.monitor_op(value - stopper.min_delta, reference))
        assert stopper._is_improvement(value, reference) is expected, (value, reference)
