"""PreciseBatchNorm: the moving statistics a model is evaluated with are its batches' average."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from callbacks.precise_bn import PreciseBatchNorm

BATCH, FEATURES = 32, 4


def data(seed: int = 0) -> tuple[np.ndarray, np.ndarray, tf.data.Dataset]:
    """Features far from BatchNorm's initial statistics (mean 5, standard deviation 2)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(5.0, 2.0, (8 * BATCH, FEATURES)).astype("float32")
    y = rng.integers(0, 2, len(x))
    return x, y, tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH)


def model_with_bn(trainable: bool = True) -> tuple[keras.Model, keras.layers.BatchNormalization]:
    """BatchNorm first, so its input (the data) does not depend on the weights being trained."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((FEATURES,))
    bn = keras.layers.BatchNormalization()
    bn.trainable = trainable
    hidden = keras.layers.Dense(8, activation="relu")(bn(inputs))
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(hidden))
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model, bn


def batch_averages(x: np.ndarray, batches: int) -> tuple[np.ndarray, np.ndarray]:
    chunks = [x[i * BATCH : (i + 1) * BATCH] for i in range(batches)]
    return np.mean([c.mean(0) for c in chunks], 0), np.mean([c.var(0) for c in chunks], 0)


def test_the_statistics_are_the_average_of_the_batches_statistics():
    x, _, train = data()
    model, bn = model_with_bn()
    model.fit(train, epochs=1, verbose=0)  # plain Keras: 8 steps at momentum 0.99
    assert np.all(np.abs(bn.moving_mean.numpy() - 5.0) > 4.0)  # still near its initial 0

    model, bn = model_with_bn()
    callback = PreciseBatchNorm(num_batches=4, data=train)
    model.fit(train, validation_data=train.take(1), epochs=1, callbacks=[callback], verbose=0)
    mean, variance = batch_averages(x, 4)
    np.testing.assert_allclose(bn.moving_mean.numpy(), mean, rtol=1e-5)
    np.testing.assert_allclose(bn.moving_variance.numpy(), variance, rtol=1e-4)
    assert bn.momentum == 0.99  # the layer's own momentum is back
    assert callback.recomputed == 1 and callback.layers == [bn]


def test_an_evaluation_without_a_step_since_keeps_the_statistics_it_was_given():
    """What the epoch's validation saw is what the checkpoint saves and the test evaluates."""
    _, _, train = data()
    model, bn = model_with_bn()
    callback = PreciseBatchNorm(num_batches=2, data=train.shuffle(256, seed=1))
    model.fit(train, validation_data=train.take(2), epochs=2, callbacks=[callback], verbose=0)
    assert callback.recomputed == 2  # each epoch's validation
    after_fit = [bn.moving_mean.numpy(), bn.moving_variance.numpy()]
    model.evaluate(train, callbacks=[callback], verbose=0)
    assert callback.recomputed == 2
    np.testing.assert_array_equal(bn.moving_mean.numpy(), after_fit[0])
    np.testing.assert_array_equal(bn.moving_variance.numpy(), after_fit[1])
    model.fit(train, validation_data=train.take(1), epochs=1, callbacks=[callback], verbose=0)
    assert callback.recomputed == 3  # steps since: recomputed


def test_a_frozen_batchnorm_keeps_its_statistics():
    _, _, train = data()
    model, bn = model_with_bn(trainable=False)
    callback = PreciseBatchNorm(num_batches=4, data=train)
    model.fit(train, validation_data=train.take(1), epochs=1, callbacks=[callback], verbose=0)
    np.testing.assert_array_equal(bn.moving_mean.numpy(), np.zeros(FEATURES))
    np.testing.assert_array_equal(bn.moving_variance.numpy(), np.ones(FEATURES))
    assert callback.recomputed == 0


def test_without_batches_it_says_what_to_pass_and_without_batchnorm_it_needs_none():
    _, _, train = data()
    model, _ = model_with_bn()
    with pytest.raises(ValueError, match="PreciseBatchNorm needs training batches: pass data="):
        model.fit(train, epochs=1, callbacks=[PreciseBatchNorm()], verbose=0)
    plain = keras.Sequential([keras.Input((FEATURES,)), keras.layers.Dense(2)])
    plain.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    callback = PreciseBatchNorm()
    plain.fit(train, validation_data=train.take(1), epochs=1, callbacks=[callback], verbose=0)
    assert callback.layers == [] and callback.recomputed == 0
    with pytest.raises(ValueError, match="num_batches must be at least 1"):
        PreciseBatchNorm(num_batches=0)
