"""Pieces shared by the callback tests: tiny data, a tiny named model, scripting and recording
callbacks. Real Keras training throughout; nothing of Keras is mocked."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import tensorflow as tf

FEATURES = 4


def regression_data(n: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, FEATURES)).astype("float32")
    y = (x @ np.array([[1.0], [-2.0], [0.5], [3.0]]) + 0.1).astype("float32")
    return x, y


def make_model(
    lr: float = 0.01,
    optimizer: str = "sgd",
    steps_per_execution: int = 1,
    seed: int = 0,
    batchnorm: bool = False,
) -> keras.Model:
    """``body`` (Dense) [-> ``body_bn``] -> ``head`` (Dense): a backbone and a head by name."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((FEATURES,))
    hidden = keras.layers.Dense(8, activation="relu", name="body")(inputs)
    if batchnorm:
        hidden = keras.layers.BatchNormalization(name="body_bn")(hidden)
    outputs = keras.layers.Dense(1, name="head")(hidden)
    model = keras.Model(inputs, outputs)
    chosen = keras.optimizers.SGD(lr) if optimizer == "sgd" else keras.optimizers.Adam(lr)
    model.compile(chosen, "mse", steps_per_execution=steps_per_execution)
    return model


def batches(x: np.ndarray, y: np.ndarray, batch_size: int = 8) -> tf.data.Dataset:
    """``x``, ``y`` as a dataset of batches in order, to pass to ``fit`` (with ``shuffle=False``,
    which a dataset ignores) where a test does not depend on the input being arrays or shuffled:
    Keras makes an iterator from it each epoch for a sixth of the CPU of its array adapter's,
    which builds a shuffling and slicing pipeline per fit (0.10 s against 0.65 s of CPU for 5
    epochs of 2 steps of a reused model)."""
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size)


# TRAINKIT_FRESH_TEST_MODELS=1: every ModelPool.get builds a fresh model, to check that the
# tests that reuse models see what they would with fresh ones.
FRESH_MODELS = os.environ.get("TRAINKIT_FRESH_TEST_MODELS") == "1"


class ModelPool:
    """Models built, compiled and trained once per pool (a test module) and options, each handed
    out put back to the state ``build(**options)`` leaves a new one in, so that Keras's traced
    train function is reused (its tracing, ~0.7 s of CPU, is most of a tiny fit's cost).

    ``build`` calls ``keras.utils.set_random_seed(options.get("seed", 0))`` first and returns a
    compiled, built model. Put back: every variable of the model (weights, random seeds), of
    its metrics and of its optimizer (iterations, learning rate, slots; the optimizer is built
    on the trainable variables first, as ``fit`` does), the layers' ``trainable`` flags,
    ``stop_training`` and the initial epoch a ``BackupAndRestore`` sets; then the random seed
    is set again, and ``train_function`` is the pool's own again (a callback may have rebuilt
    it for other trainable flags, or swapped it for steps that skip). Not for tests whose
    subject is graph mode, ``steps_per_execution`` or the model's lifecycle: those build their
    own."""

    def __init__(self, build: Callable[..., keras.Model] | None = None) -> None:
        self.build = build or make_model
        self.models: dict[tuple, tuple[keras.Model, list, list[bool], Any]] = {}

    def get(self, **options: Any) -> keras.Model:
        if FRESH_MODELS:
            return self.build(**options)
        key = tuple(sorted(options.items()))
        if key not in self.models:
            model = self.build(**options)
            model.optimizer.build(model.trainable_variables)
            variables = model.variables + model.metrics_variables + model.optimizer.variables
            values = [(v, keras.ops.convert_to_numpy(v.value)) for v in variables]
            trainable = [layer.trainable for layer in model.layers]
            # Made (not traced) now, with the initial trainable flags, as fit would make it;
            # traced by the first fit and kept.
            model.make_train_function()
            self.models[key] = (model, values, trainable, model.train_function)
        model, values, trainable, train_function = self.models[key]
        for layer, flag in zip(model.layers, trainable, strict=True):
            layer.trainable = flag
        for variable, value in values:
            variable.assign(value)
        model.train_function = train_function
        model.stop_training = False
        model._initial_epoch = None
        keras.utils.set_random_seed(options.get("seed", 0))
        return model


class Script(keras.callbacks.Callback):
    """Overwrites ``logs[key]`` at each epoch end with the next scripted value."""

    def __init__(self, key: str, values: list[float]) -> None:
        super().__init__()
        self.key = key
        self.values = values

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs[self.key] = self.values[epoch]


class Recorder(keras.callbacks.Callback):
    """Copies what it sees: batch and epoch logs, optionally weights and the optimizer LR."""

    def __init__(self, weights: bool = False, batch_weights: bool = False, lr: bool = False):
        super().__init__()
        self.weights = weights
        self.record_batch_weights = batch_weights
        self.lr = lr

    def on_train_begin(self, logs=None):
        self.epochs: list[int] = []
        self.batch_begin: list[tuple[int, int, dict]] = []
        self.batch_end: list[tuple[int, int, dict]] = []
        self.step_lr: list[float] = []
        self.epoch_begin_lr: list[float] = []
        self.epoch_logs: list[dict] = []
        self.epoch_weights: list[list[np.ndarray]] = []
        self.epoch_optimizer: list[list[np.ndarray]] = []
        self.batch_weights: list[list[np.ndarray]] = []
        self.first_batch_weights: list[np.ndarray] | None = None
        self.iterations_at_first_batch: int | None = None
        self.test_end_logs: dict | None = None
        self.predict_end_logs: dict | None = None

    def _lr(self) -> float:
        return float(self.model.optimizer.learning_rate.numpy())

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        self.epochs.append(epoch)
        if self.lr:
            self.epoch_begin_lr.append(self._lr())

    def on_train_batch_begin(self, batch, logs=None):
        self.batch_begin.append((self.epoch, batch, dict(logs or {})))

    def on_train_batch_end(self, batch, logs=None):
        self.batch_end.append((self.epoch, batch, dict(logs or {})))
        if self.lr:  # the rate the (last) step of the execution trained with
            self.step_lr.append(self._lr())
        if self.record_batch_weights:
            self.batch_weights.append(self.model.get_weights())
        if self.first_batch_weights is None and logs and "loss" in logs:
            # The weights after the first step that trained in this fit.
            self.first_batch_weights = self.model.get_weights()

    def on_epoch_end(self, epoch, logs=None):
        self.epoch_logs.append(dict(logs or {}))
        if self.weights:
            self.epoch_weights.append(self.model.get_weights())
            self.epoch_optimizer.append([v.numpy() for v in self.model.optimizer.variables])

    def on_test_end(self, logs=None):
        self.test_end_logs = dict(logs or {})

    def on_predict_end(self, logs=None):
        self.predict_end_logs = dict(logs or {})


class RaiseAt(keras.callbacks.Callback):
    """Raises ``Interrupted`` at the start of an epoch, or of a batch of that epoch."""

    def __init__(self, epoch: int, batch: int | None = None) -> None:
        super().__init__()
        self.at_epoch = epoch
        self.at_batch = batch

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        if epoch == self.at_epoch and self.at_batch is None:
            raise Interrupted(f"epoch {epoch}")

    def on_train_batch_begin(self, batch, logs=None):
        if self.epoch == self.at_epoch and batch == self.at_batch:
            raise Interrupted(f"epoch {self.epoch} batch {batch}")


class Interrupted(Exception):
    pass


def assert_weights_equal(actual: list[np.ndarray], expected: list[np.ndarray]) -> None:
    assert len(actual) == len(expected)
    for a, b in zip(actual, expected, strict=True):
        np.testing.assert_array_equal(a, b)


def weights_differ(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return any(not np.array_equal(x, y) for x, y in zip(a, b, strict=True))
