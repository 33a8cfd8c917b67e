"""The data layer: splits, the tf.data pipeline, folders, and keras.datasets offline."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from trainkit.data import load
from trainkit.data.split import split_indices
from trainkit.errors import ConfigError, DataNotFoundError

DIGITS = {"name": "digits", "augment": {"translate": 0.1}}


def test_digits_split_is_stratified_and_disjoint():
    labels = np.repeat(np.arange(10), 50)
    parts = split_indices(labels, 0.2, 0.2, seed=3)
    assert sum(len(p) for p in parts.values()) == 500
    assert not set(parts["train"]) & set(parts["val"])
    assert not set(parts["train"]) & set(parts["test"])
    for part in parts.values():
        counts = np.bincount(labels[part], minlength=10)
        assert counts.max() - counts.min() <= 1


def test_limit_caps_training_and_shrinks_the_rest():
    labels = np.repeat(np.arange(10), 100)
    parts = split_indices(labels, 0.15, 0.15, limit=70, seed=0)
    assert len(parts["train"]) == 70
    assert 10 <= len(parts["val"]) <= 20 and 10 <= len(parts["test"]) <= 20


def test_bad_fractions_and_limits():
    labels = np.arange(10)
    with pytest.raises(ConfigError, match="val_split"):
        split_indices(labels, 0.6, 0.5)
    with pytest.raises(ConfigError, match="limit"):
        split_indices(labels, 0.1, 0.1, limit=0)


def test_digits_pipeline_shapes_range_and_channels():
    bundle = load(DIGITS, image_size=(32, 32), batch_size=16, seed=0)
    assert bundle.class_names == [str(i) for i in range(10)]
    assert bundle.sizes == {"train": 1257, "val": 270, "test": 270}
    images, labels = bundle.sample_batch("train")
    assert images.shape == (16, 32, 32, 3) and images.dtype == np.float32
    assert images.min() >= 0.0 and images.max() <= 255.0 and images.max() > 100
    np.testing.assert_array_equal(images[..., 0], images[..., 2])  # grey made RGB
    assert bundle.steps("train") == 79


def test_augmentation_translates_training_images_only():
    no_aug = load({"name": "digits", "augment": {"enabled": False}}, (16, 16), 8, seed=0)
    aug = load(DIGITS | {"augment": {"translate": 0.25}}, (16, 16), 8, seed=0)
    test_a, _ = no_aug.sample_batch("test")
    test_b, _ = aug.sample_batch("test")
    np.testing.assert_array_equal(test_a, test_b)
    # Same seed, same shuffle order: only the translation differs.
    train_a, labels_a = no_aug.sample_batch("train")
    train_b, labels_b = aug.sample_batch("train")
    np.testing.assert_array_equal(labels_a, labels_b)
    assert not np.allclose(train_a, train_b)


def write_images(root, classes=("cat", "dog"), per_class=6, size=20):
    rng = np.random.default_rng(0)
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 60, (size, size, 3)) + 150 * c
            Image.fromarray(pixels.astype(np.uint8)).save(root / name / f"{i}.png")


def test_folder_source(tmp_path):
    write_images(tmp_path / "imgs")
    bundle = load(
        {"name": "folder", "path": str(tmp_path / "imgs"), "val_split": 0.2, "test_split": 0.2},
        image_size=(24, 24),
        batch_size=4,
    )
    assert bundle.class_names == ["cat", "dog"]
    assert sum(bundle.sizes.values()) == 12
    images, labels = bundle.sample_batch("test")
    assert images.shape[1:] == (24, 24, 3)
    # Class 1 images are brighter by construction: labels follow the folders.
    means = images.mean(axis=(1, 2, 3))
    assert all((m > 140) == bool(lbl) for m, lbl in zip(means, labels, strict=True))


def test_missing_folder_is_one_line(tmp_path):
    with pytest.raises(DataNotFoundError) as err:
        load({"name": "folder", "path": str(tmp_path / "nope")}, (24, 24), 4)
    assert "data folder not found" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(DataNotFoundError, match="data.path=DIR"):
        load({"name": "folder", "path": "???"}, (24, 24), 4)


def test_keras_dataset_offline_names_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    with pytest.raises(DataNotFoundError) as err:
        load({"name": "mnist"}, (28, 28), 8)
    message = str(err.value)
    assert str(tmp_path / "keras" / "datasets" / "mnist.npz") in message
    assert "\n" not in message


def test_unknown_dataset():
    with pytest.raises(ConfigError, match="choose one of digits"):
        load({"name": "imagenet"}, (24, 24), 4)
