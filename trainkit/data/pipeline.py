"""The tf.data pipeline: cache, shuffle, batch, resize, augment, prefetch.

Images stay at their stored size in the cache and are resized per batch, so an 8x8 source
feeding a 227x227 model costs 8x8 of memory, not 227x227.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

AUTOTUNE = tf.data.AUTOTUNE


def make_augmenter(augment: dict[str, Any] | None, seed: int) -> keras.Sequential | None:
    """The training augmentation (random translation, optional flip), or None when off."""
    augment = dict(augment or {})
    if not augment.get("enabled", True):
        return None
    steps: list[keras.layers.Layer] = []
    translate = float(augment.get("translate", 0.0) or 0.0)
    if translate > 0:
        steps.append(
            keras.layers.RandomTranslation(translate, translate, fill_mode="constant", seed=seed)
        )
    if augment.get("flip", False):
        steps.append(keras.layers.RandomFlip("horizontal", seed=seed))
    return keras.Sequential(steps, name="augment") if steps else None


def _to_model_input(images: tf.Tensor, size: tuple[int, int]) -> tf.Tensor:
    images = tf.cast(images, tf.float32)
    if images.shape[1:3] != tuple(size):
        images = tf.image.resize(images, size, method="bilinear")
    if images.shape[-1] == 1:
        images = tf.repeat(images, 3, axis=-1)
    return tf.clip_by_value(images, 0.0, 255.0)


def from_arrays(
    images: np.ndarray,
    labels: np.ndarray,
    *,
    image_size: tuple[int, int],
    batch_size: int,
    training: bool,
    augmenter: keras.Sequential | None,
    seed: int,
) -> tf.data.Dataset:
    """A batched pipeline over in-memory images of any size and 1 or 3 channels."""
    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).cache()
    return _finish(dataset, len(labels), image_size, batch_size, training, augmenter, seed)


def from_files(
    paths: np.ndarray,
    labels: np.ndarray,
    *,
    image_size: tuple[int, int],
    batch_size: int,
    training: bool,
    augmenter: keras.Sequential | None,
    seed: int,
    cache: bool = True,
) -> tf.data.Dataset:
    """A batched pipeline that decodes image files, resized to ``image_size`` once, cached."""

    def load(path, label):
        raw = tf.io.read_file(path)
        image = tf.io.decode_image(raw, channels=3, expand_animations=False)
        image = tf.image.resize(tf.cast(image, tf.float32), image_size)
        image.set_shape((*image_size, 3))
        return image, label

    dataset = tf.data.Dataset.from_tensor_slices((paths, labels)).map(
        load, num_parallel_calls=AUTOTUNE
    )
    if cache:
        dataset = dataset.cache()
    return _finish(dataset, len(labels), image_size, batch_size, training, augmenter, seed)


def _finish(dataset, count, image_size, batch_size, training, augmenter, seed):
    if training:
        dataset = dataset.shuffle(min(count, 10_000), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size)

    def prepare(images, labels):
        images = _to_model_input(images, image_size)
        if training and augmenter is not None:
            images = augmenter(images, training=True)
        return images, labels

    return dataset.map(prepare, num_parallel_calls=AUTOTUNE).prefetch(AUTOTUNE)
