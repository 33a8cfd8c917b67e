"""GoogLeNet's auxiliary classifiers: in the training loss only, absent everywhere else."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.models.conftest import images
from trainkit.models import backbone_layers, build_model, head_layers
from trainkit.models.inception_v1 import GoogLeNet

SIZE = 64
LABELS = np.array([0, 1, 2, 1])


@pytest.fixture(scope="module")
def googlenet() -> GoogLeNet:
    """No dropout, so that the training forward pass is deterministic."""
    keras.backend.clear_session()
    return build_model("inception_v1", 3, input_shape=SIZE, dropout=0.0, aux_dropout=0.0)


def crossentropy(labels, probabilities) -> float:
    return float(keras.losses.SparseCategoricalCrossentropy()(labels, probabilities))


@pytest.mark.slow
def test_training_loss_adds_0_3_of_each_auxiliary_loss(googlenet):
    x = images(SIZE, n=4)
    main, aux1, aux2 = (np.asarray(p) for p in googlenet(x, training=True))
    expected = crossentropy(LABELS, main) + 0.3 * (
        crossentropy(LABELS, aux1) + crossentropy(LABELS, aux2)
    )
    # A zero learning rate: the step reports the loss of these very weights. The compiled
    # (graph-mode) train function is the one the job runs.
    googlenet.compile(optimizer=keras.optimizers.SGD(0.0), loss="sparse_categorical_crossentropy")
    loss = googlenet.train_on_batch(x, LABELS)
    assert loss == pytest.approx(expected, rel=1e-5)
    assert expected > crossentropy(LABELS, main) * 1.1  # the auxiliary terms are really there
    # Evaluation sees the main classifier only.
    assert googlenet.evaluate(x, LABELS, verbose=0) == pytest.approx(
        crossentropy(LABELS, main), rel=1e-5
    )


def test_inference_has_one_output(googlenet):
    assert len(googlenet.outputs) == 1
    assert googlenet.output_shape == (None, 3)
    predictions = googlenet.predict(images(SIZE), verbose=0)
    assert isinstance(predictions, np.ndarray) and predictions.shape == (2, 3)
    assert len(googlenet(images(SIZE), training=True)) == 3


def test_aux_layers_are_head_layers(googlenet):
    heads = {layer.name for layer in head_layers(googlenet)}
    assert {"predictions", "head_aux1_conv", "head_aux1_fc", "head_aux2_predictions"} <= heads
    assert not heads & {layer.name for layer in backbone_layers(googlenet)}


@pytest.mark.slow
def test_keras_file_keeps_the_aux_heads(googlenet, tmp_path):
    googlenet.save(tmp_path / "googlenet.keras")
    loaded = keras.saving.load_model(tmp_path / "googlenet.keras")
    assert isinstance(loaded, GoogLeNet)
    x = images(SIZE)
    for ours, theirs in zip(googlenet(x, training=True), loaded(x, training=True), strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_export_has_no_aux_outputs_or_weights(googlenet, tmp_path):
    googlenet.export(tmp_path / "exported", verbose=False)
    exported = tf.saved_model.load(str(tmp_path / "exported"))
    names = [v.name for v in exported.variables]
    assert names and not any("aux" in name for name in names)
    probabilities = exported.serve(images(SIZE))
    assert tuple(probabilities.shape) == (2, 3)
    np.testing.assert_allclose(probabilities, googlenet.predict(images(SIZE), verbose=0), atol=1e-5)
    inference = googlenet.inference_model()
    assert not any(layer.name.startswith("head_aux") for layer in inference.layers)


def test_without_aux_heads_the_loss_is_the_main_loss():
    model = build_model("inception_v1", 3, input_shape=SIZE, aux_heads=False, dropout=0.0)
    assert not isinstance(model, GoogLeNet)
    assert not any("aux" in layer.name for layer in model.layers)
    model.compile(
        optimizer=keras.optimizers.SGD(0.0),
        loss="sparse_categorical_crossentropy",
        run_eagerly=True,
    )
    x = images(SIZE, n=4)
    expected = crossentropy(LABELS, model.predict_on_batch(x))
    assert model.train_on_batch(x, LABELS) == pytest.approx(expected, rel=1e-5)
