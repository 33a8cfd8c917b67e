"""``load``: from the ``data`` config group to a :class:`DataBundle`."""

from __future__ import annotations

from typing import Any

import numpy as np

from trainkit.data import arrays, folder, pipeline
from trainkit.data.bundle import DataBundle
from trainkit.data.split import split_indices
from trainkit.errors import ConfigError

SOURCES = ("digits", "folder", "mnist", "fashion_mnist", "cifar10")

# A folder dataset is cached decoded in memory when it fits in this many bytes.
MEMORY_CACHE_LIMIT = 2 * 1024**3


def load(
    cfg: dict[str, Any], image_size: tuple[int, int], batch_size: int, seed: int = 0
) -> DataBundle:
    """Build the train/val/test pipelines that ``cfg`` (the ``data`` group) describes.

    Args:
        cfg: ``name`` (one of :data:`SOURCES`), ``path`` (folder only), ``limit``,
            ``val_split``, ``test_split``, ``augment`` (``translate``, ``flip``, ``enabled``).
        image_size: (height, width) the model takes.
        batch_size: examples per batch, for every split.
        seed: for the split, the shuffle and the augmentation.
    """
    name = cfg.get("name")
    if name not in SOURCES:
        raise ConfigError(f"unknown dataset '{name}': choose one of {', '.join(SOURCES)}")
    if batch_size < 1:
        raise ConfigError(f"trainer.batch_size must be at least 1, got {batch_size}")
    augmenter = pipeline.make_augmenter(cfg.get("augment"), seed)

    if name == "folder":
        paths, labels, class_names = folder.list_images(cfg.get("path"))
        source = paths
    else:
        images, labels, class_names = (
            arrays.digits() if name == "digits" else arrays.keras_dataset(name)
        )
        source = images

    parts = split_indices(
        labels,
        float(cfg.get("val_split", 0.15)),
        float(cfg.get("test_split", 0.15)),
        limit=cfg.get("limit"),
        seed=seed,
    )
    splits = {}
    for split, idx in parts.items():
        kwargs = dict(
            image_size=tuple(image_size),
            batch_size=batch_size,
            training=split == "train",
            augmenter=augmenter,
            seed=seed,
        )
        if name == "folder":
            fits = len(idx) * image_size[0] * image_size[1] * 3 * 4 <= MEMORY_CACHE_LIMIT
            splits[split] = pipeline.from_files(source[idx], labels[idx], cache=fits, **kwargs)
        else:
            splits[split] = pipeline.from_arrays(source[idx], labels[idx], **kwargs)

    # Training data is a function of (seed, epoch); the bundle's train split is epoch 0, and the
    # job trains on extras["train_data"].stream(...) (trainkit.data.pipeline.TrainData).
    train_data = splits["train"]
    splits["train"] = train_data.epoch(0).prefetch(pipeline.AUTOTUNE)
    counts = {split: int(len(idx)) for split, idx in parts.items()}
    return DataBundle(
        name=name,
        train=splits["train"],
        val=splits["val"],
        test=splits["test"],
        class_names=class_names,
        image_size=(int(image_size[0]), int(image_size[1])),
        batch_size=batch_size,
        sizes=counts,
        extras={"test_labels": np.asarray(labels[parts["test"]]), "train_data": train_data},
    )
