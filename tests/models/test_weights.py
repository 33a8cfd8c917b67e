"""weights=PATH: resuming from .keras / .weights.h5, transfer to other heads and input sizes."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from tests.models.conftest import images
from trainkit.errors import WeightsNotAvailableError
from trainkit.models import build_model, is_head_layer
from trainkit.models.weights import all_layers

# trains, saves and reloads three models, CLIP ResNet-50 among them.
pytestmark = pytest.mark.slow

CASES = {  # a subclassed model with aux heads, a nested keras.applications backbone, CLIP
    "inception_v1": 48,
    "mobilenet_v2": 32,
    "clip_resnet50": 64,
}


def trained(name: str, size: int, num_classes: int = 3) -> keras.Model:
    model = build_model(name, num_classes, input_shape=size)
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", run_eagerly=True)
    model.train_on_batch(images(size, n=4, seed=5), np.array([0, 1, 2, 0]) % num_classes)
    return model


@pytest.fixture(scope="module", params=sorted(CASES))
def saved(request, tmp_path_factory) -> tuple[str, keras.Model, Path, Path]:
    keras.backend.clear_session()
    name = request.param
    model = trained(name, CASES[name])
    folder = tmp_path_factory.mktemp(name)
    model.save(folder / "model.keras")
    model.save_weights(folder / "model.weights.h5")
    return name, model, folder / "model.keras", folder / "model.weights.h5"


def assert_same_weights(ours: keras.Model, theirs: keras.Model) -> None:
    for a, b in zip(ours.weights, theirs.weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)


@pytest.mark.parametrize("kind", ["keras", "weights.h5"])
def test_rebuild_from_a_file_predicts_the_same(saved, kind):
    name, model, keras_file, h5_file = saved
    path = keras_file if kind == "keras" else h5_file
    rebuilt = build_model(name, 3, input_shape=CASES[name], weights=str(path))
    assert_same_weights(model, rebuilt)  # BatchNorm statistics and aux heads included
    x = images(CASES[name], seed=9)
    expected = np.asarray(model(x))
    assert np.isfinite(expected).all()
    np.testing.assert_allclose(rebuilt(x), expected, rtol=1e-5, atol=1e-6)


def test_transfer_to_another_number_of_classes_keeps_the_backbone(saved):
    name, model, keras_file, _ = saved
    other = build_model(name, 5, input_shape=CASES[name], weights=str(keras_file))
    assert other.output_shape == (None, 5)
    source = {layer.name: layer for layer in all_layers(model)}
    kept = [layer for layer in all_layers(other) if layer.weights and not is_head_layer(layer)]
    assert len(kept) > 10
    for layer in kept:
        for ours, theirs in zip(layer.weights, source[layer.name].weights, strict=True):
            np.testing.assert_array_equal(ours.numpy(), theirs.numpy(), err_msg=ours.path)
    assert other.get_layer("predictions").kernel.shape[-1] == 5


@pytest.mark.parametrize("saved", ["clip_resnet50"], indirect=True)
def test_clip_weights_move_to_another_input_size(saved):
    name, model, keras_file, _ = saved
    larger = build_model(name, 3, input_shape=96, weights=str(keras_file))
    assert_same_weights(model, larger)


@pytest.mark.parametrize("saved", ["inception_v1"], indirect=True)
def test_h5_weights_need_the_same_head(saved):
    name, _, _, h5_file = saved
    with pytest.raises(WeightsNotAvailableError) as error:
        build_model(name, 5, input_shape=CASES[name], weights=str(h5_file))
    message = str(error.value)
    assert "\n" not in message and str(h5_file) in message and ".keras" in message


@pytest.mark.parametrize("saved", ["inception_v1"], indirect=True)
def test_weights_of_another_architecture_are_refused(saved):
    _, _, keras_file, _ = saved
    with pytest.raises(WeightsNotAvailableError) as error:
        build_model("alexnet", 3, input_shape=67, weights=str(keras_file))
    assert "\n" not in str(error.value) and "do not fit" in str(error.value)


def test_bad_paths_are_one_line_errors(tmp_path):
    (tmp_path / "weights.txt").write_text("nope")
    for path, words in [
        (tmp_path / "missing.keras", "not found"),
        (tmp_path / "weights.txt", "expected a .keras or .weights.h5"),
    ]:
        with pytest.raises(WeightsNotAvailableError) as error:
            build_model("inception_v1", 3, input_shape=48, weights=str(path))
        assert words in str(error.value) and "\n" not in str(error.value)
