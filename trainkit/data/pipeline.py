"""The tf.data pipeline: cache, shuffle, batch, resize, augment, prefetch.

Images stay at their stored size in the cache and are resized per batch, so an 8x8 source
feeding a 227x227 model costs 8x8 of memory, not 227x227.

Training data is a function of ``(seed, epoch)``: epoch ``e`` is shuffled with its own seed and
each batch ``b`` of it is augmented with stateless random ops seeded by ``(seed, e, b)``, so the
order and the augmented images of any epoch are the same in every process. That is what lets a
resumed job (``callbacks.backup``) continue with the very next batch: :func:`train_stream` starts
at ``(epoch, batch)`` with ``Dataset.skip``, without producing the batches already trained.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf

AUTOTUNE = tf.data.AUTOTUNE


@dataclass(frozen=True)
class Augment:
    """Training augmentation: random translation (a fraction of the side) and horizontal flip.

    Applied with stateless random ops, so a batch's augmentation depends only on its seed."""

    translate: float = 0.0
    flip: bool = False

    @property
    def enabled(self) -> bool:
        return self.translate > 0 or self.flip

    def __call__(self, images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        n = tf.shape(images)[0]
        height = tf.cast(tf.shape(images)[1], tf.float32)
        width = tf.cast(tf.shape(images)[2], tf.float32)
        if self.flip:
            flip = tf.random.stateless_uniform([n], seed=seed + [0, 1]) < 0.5
            images = tf.where(flip[:, None, None, None], tf.reverse(images, axis=[2]), images)
        if self.translate > 0:
            shift = tf.random.stateless_uniform(
                [n, 2], seed=seed, minval=-self.translate, maxval=self.translate
            )
            dx, dy = tf.round(shift[:, 0] * width), tf.round(shift[:, 1] * height)
            ones, zeros = tf.ones_like(dx), tf.zeros_like(dx)
            # output(x, y) = input(x + dx, y + dy): the image moves by (-dx, -dy), zeros fill.
            transforms = tf.stack([ones, zeros, dx, zeros, ones, dy, zeros, zeros], axis=1)
            images = tf.raw_ops.ImageProjectiveTransformV3(
                images=images,
                transforms=transforms,
                output_shape=tf.shape(images)[1:3],
                fill_value=0.0,
                interpolation="NEAREST",
                fill_mode="CONSTANT",
            )
        return images


def make_augmenter(augment: dict[str, Any] | None, seed: int = 0) -> Augment | None:
    """The training augmentation (random translation, optional flip), or None when off."""
    augment = dict(augment or {})
    if not augment.get("enabled", True):
        return None
    made = Augment(float(augment.get("translate", 0.0) or 0.0), bool(augment.get("flip", False)))
    return made if made.enabled else None


def _to_model_input(images: tf.Tensor, size: tuple[int, int]) -> tf.Tensor:
    images = tf.cast(images, tf.float32)
    if images.shape[1:3] != tuple(size):
        images = tf.image.resize(images, size, method="bilinear")
    if images.shape[-1] == 1:
        images = tf.repeat(images, 3, axis=-1)
    return tf.clip_by_value(images, 0.0, 255.0)


class TrainData:
    """The training split as epochs: :meth:`epoch` ``e`` is always the same batches.

    Attributes:
        steps: batches per epoch.
    """

    def __init__(self, cached, count, image_size, batch_size, augmenter, seed) -> None:
        self.cached = cached
        self.count = int(count)
        self.image_size = tuple(image_size)
        self.batch_size = int(batch_size)
        self.augmenter = augmenter
        self.seed = int(seed)
        self.steps = -(-self.count // self.batch_size)

    def epoch(self, epoch: int, skip: int = 0, take: int | None = None) -> tf.data.Dataset:
        """Epoch ``epoch``'s batches from batch ``skip`` on (at most ``take`` batches in all)."""
        seed = np.int64(self.seed) * 100_003 + int(epoch)
        dataset = self.cached.shuffle(
            min(self.count, 10_000), seed=int(seed), reshuffle_each_iteration=False
        ).batch(self.batch_size)
        if take is not None:
            dataset = dataset.take(int(take))
        dataset = dataset.enumerate().skip(int(skip))
        size, augmenter, base = self.image_size, self.augmenter, [self.seed, int(epoch) << 20]

        def prepare(index, batch):
            images, labels = batch
            images = _to_model_input(images, size)
            if augmenter is not None:
                seed = tf.stack([tf.constant(base[0], tf.int64), base[1] + index])
                images = augmenter(images, seed)
            return tf.ensure_shape(images, [None, *size, 3]), labels

        return dataset.map(prepare, num_parallel_calls=AUTOTUNE, deterministic=True)

    def stream(
        self, first_epoch: int, epochs: int, skip: int = 0, steps: int | None = None
    ) -> tf.data.Dataset:
        """Epochs ``first_epoch`` .. ``epochs - 1`` one after the other (``steps`` batches each,
        all by default), the first from batch ``skip``: what ``fit`` takes with
        ``steps_per_epoch``."""
        parts = [
            self.epoch(e, skip if e == first_epoch else 0, steps)
            for e in range(int(first_epoch), max(int(epochs), int(first_epoch) + 1))
        ]
        dataset = parts[0]
        for part in parts[1:]:
            dataset = dataset.concatenate(part)
        return dataset.prefetch(AUTOTUNE)


def from_arrays(
    images: np.ndarray,
    labels: np.ndarray,
    *,
    image_size: tuple[int, int],
    batch_size: int,
    training: bool,
    augmenter: Augment | None,
    seed: int,
) -> tf.data.Dataset | TrainData:
    """A batched pipeline over in-memory images of any size and 1 or 3 channels; for training,
    the :class:`TrainData` of the epochs."""
    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).cache()
    return _finish(dataset, len(labels), image_size, batch_size, training, augmenter, seed)


def from_files(
    paths: np.ndarray,
    labels: np.ndarray,
    *,
    image_size: tuple[int, int],
    batch_size: int,
    training: bool,
    augmenter: Augment | None,
    seed: int,
    cache: bool = True,
) -> tf.data.Dataset | TrainData:
    """A batched pipeline that decodes image files, resized to ``image_size`` once, cached; for
    training, the :class:`TrainData` of the epochs."""

    def load(path, label):
        raw = tf.io.read_file(path)
        image = tf.io.decode_image(raw, channels=3, expand_animations=False)
        image = tf.image.resize(tf.cast(image, tf.float32), image_size)
        image.set_shape((*image_size, 3))
        return image, label

    dataset = tf.data.Dataset.from_tensor_slices((paths, labels)).map(
        load, num_parallel_calls=AUTOTUNE, deterministic=True
    )
    if cache:
        dataset = dataset.cache()
    return _finish(dataset, len(labels), image_size, batch_size, training, augmenter, seed)


def _finish(dataset, count, image_size, batch_size, training, augmenter, seed):
    if training:
        return TrainData(dataset, count, image_size, batch_size, augmenter, seed)

    def prepare(images, labels):
        return _to_model_input(images, image_size), labels

    return dataset.batch(batch_size).map(prepare, num_parallel_calls=AUTOTUNE).prefetch(AUTOTUNE)
