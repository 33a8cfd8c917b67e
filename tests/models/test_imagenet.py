"""weights="imagenet": the cache is checked first, offline is a one-line error, no download.

The real files are not needed: the offline case points KERAS_HOME at an empty folder, and the
loading case writes small stand-in files in Keras' own HDF5 layout into a temporary cache.
"""

from __future__ import annotations

import urllib.request

import h5py
import keras
import numpy as np
import pytest
from keras.src.legacy.saving import legacy_h5_format

from tests.models.conftest import images
from trainkit.errors import WeightsNotAvailableError
from trainkit.models import available_models, build_model, get_spec

WITH_IMAGENET = [
    "inception_resnet_v2",
    "inception_v3",
    "mobilenet_v2",
    "resnet50",
    "resnet50_v2",
    "vgg16",
    "vgg19",
]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty Keras cache, and no network: any download attempt fails the test."""
    home = tmp_path / "keras_home"
    (home / "models").mkdir(parents=True)
    monkeypatch.setenv("KERAS_HOME", str(home))

    def no_network(*args, **kwargs):
        raise AssertionError(f"a download was attempted: {args[:2]}")

    monkeypatch.setattr(keras.utils, "get_file", no_network)
    monkeypatch.setattr("keras.src.utils.file_utils.get_file", no_network)
    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    monkeypatch.setattr(urllib.request, "urlretrieve", no_network)
    return home / "models"


def test_which_models_have_imagenet_weights():
    assert [n for n in available_models() if get_spec(n).imagenet_weights] == WITH_IMAGENET


@pytest.mark.parametrize("name", WITH_IMAGENET)
@pytest.mark.parametrize("num_classes", [1000, 10])
def test_offline_is_a_one_line_error_naming_the_cache_file(cache, name, num_classes):
    with pytest.raises(WeightsNotAvailableError) as error:
        build_model(name, num_classes, input_shape=96, weights="imagenet")
    message = str(error.value)
    assert "\n" not in message
    assert f"{cache}/" in message and ".h5" in message and "https://" in message
    file_name = message.split(f"{cache}/")[1].split()[0].rstrip(",")
    assert file_name.endswith(".h5")
    # The full ImageNet top for 1000 classes (at the native size for VGG's Flatten).
    with_top = num_classes == 1000 and (not name.startswith("vgg"))
    assert ("notop" in file_name or "no_top" in file_name) is not with_top


@pytest.mark.parametrize("name", sorted(set(available_models()) - set(WITH_IMAGENET)))
def test_models_without_imagenet_weights_say_so(cache, name):
    with pytest.raises(WeightsNotAvailableError) as error:
        build_model(name, 1000, weights="imagenet")
    assert "has no ImageNet weights" in str(error.value) and "\n" not in str(error.value)


def test_download_failures_are_one_line_errors(cache):
    with pytest.raises(WeightsNotAvailableError) as error:
        build_model("resnet50", 10, input_shape=64, weights="imagenet", download_weights=True)
    assert "cannot download" in str(error.value) and "\n" not in str(error.value)


def _write_keras_h5(model: keras.Model, path) -> None:
    """Save weights the way keras.applications' ImageNet files are stored."""
    with h5py.File(path, "w") as handle:
        legacy_h5_format.save_weights_to_hdf5_group(handle, model)


def _randomise_batchnorm(model: keras.Model) -> None:
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.set_weights(
                [rng.uniform(0.5, 1.5, w.shape).astype("float32") for w in layer.get_weights()]
            )


@pytest.mark.slow
def test_imagenet_files_in_the_cache_are_loaded(cache):
    """MobileNetV2 (alpha 0.35, 96 px): the with-top file for 1000 classes, else no-top."""
    stem = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_96"
    full = keras.applications.MobileNetV2(input_shape=(96, 96, 3), alpha=0.35, weights=None)
    _randomise_batchnorm(full)
    _write_keras_h5(full, cache / f"{stem}.h5")
    notop = keras.applications.MobileNetV2(
        input_shape=(96, 96, 3), alpha=0.35, weights=None, include_top=False
    )
    _randomise_batchnorm(notop)
    _write_keras_h5(notop, cache / f"{stem}_no_top.h5")

    ours = build_model("mobilenet_v2", 1000, input_shape=96, weights="imagenet", alpha=0.35)
    x = images(96)
    expected = full(keras.applications.mobilenet_v2.preprocess_input(x.copy()))
    np.testing.assert_allclose(ours(x), expected, rtol=1e-4, atol=1e-6)

    ours = build_model("mobilenet_v2", 4, input_shape=96, weights="imagenet", alpha=0.35)
    features = ours.get_layer("backbone")(ours.get_layer("preprocess")(x))
    expected = notop(keras.applications.mobilenet_v2.preprocess_input(x.copy()))
    np.testing.assert_allclose(features, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_inception_v3_loads_keras_imagenet_files_layer_for_layer(cache):
    """The hand-written Inception v3 computes what keras.applications' does with its weights."""
    reference = keras.applications.InceptionV3(
        include_top=False, weights=None, input_shape=(75, 75, 3)
    )
    _randomise_batchnorm(reference)
    _write_keras_h5(reference, cache / "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5")
    ours = build_model("inception_v3", 7, input_shape=75, weights="imagenet")
    features = keras.Model(ours.input, ours.get_layer("mixed10").output)
    x = images(75)
    expected = reference(keras.applications.inception_v3.preprocess_input(x.copy()))
    np.testing.assert_allclose(features(x), expected, rtol=1e-4, atol=1e-4)
