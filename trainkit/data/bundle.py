"""What the data layer hands the job."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import tensorflow as tf


@dataclass
class DataBundle:
    """The three splits as batched pipelines, and what callbacks need to know about them."""

    name: str
    train: tf.data.Dataset
    val: tf.data.Dataset
    test: tf.data.Dataset
    class_names: list[str]
    image_size: tuple[int, int]
    batch_size: int
    sizes: dict[str, int] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def steps(self, split: str) -> int:
        """Batches in one pass over ``split`` (``train``, ``val``, ``test``)."""
        return math.ceil(self.sizes[split] / self.batch_size)

    def sample_batch(self, split: str = "train") -> tuple[Any, Any]:
        """One batch of ``split`` (augmented for train), as numpy arrays."""
        dataset = {"train": self.train, "val": self.val, "test": self.test}[split]
        images, labels = next(iter(dataset.take(1)))
        return images.numpy(), labels.numpy()
