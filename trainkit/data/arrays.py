"""In-memory sources: scikit-learn's digits and the keras.datasets archives.

Each returns ``(images, labels, class_names)`` with images as uint8-range arrays of shape
``(n, h, w, c)``, c being 1 or 3. Splitting and resizing happen in the pipeline.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from pathlib import Path

import numpy as np

from trainkit.errors import DataNotFoundError

Arrays = tuple[np.ndarray, np.ndarray, list[str]]

CIFAR10_CLASSES = [
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
]  # fmt: skip
FASHION_MNIST_CLASSES = [
    "t-shirt/top", "trouser", "pullover", "dress", "coat",
    "sandal", "shirt", "sneaker", "bag", "ankle boot",
]  # fmt: skip

# Where keras.datasets keeps each archive, and where it fetches it from, for the offline hint.
KERAS_ARCHIVES = {
    "mnist": ("mnist.npz", "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz"),
    "fashion_mnist": (
        "fashion-mnist/",
        "https://storage.googleapis.com/tensorflow/tf-keras-datasets/ (4 *-ubyte.gz files)",
    ),
    "cifar10": (
        "cifar-10-batches-py-target/",
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz (extracted)",
    ),
}


def digits() -> Arrays:
    """scikit-learn's 8x8 handwritten digits (1,797 images, shipped in the wheel)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    # Pixel values are 0..16: stretch them to the 0..255 range every model expects.
    images = (bunch.images * (255.0 / 16.0)).astype(np.float32)[..., None]
    return images, bunch.target.astype(np.int32), [str(c) for c in bunch.target_names]


def keras_cache_dir() -> Path:
    base = os.environ.get("KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras"))
    return Path(base) / "datasets"


def keras_dataset(name: str) -> Arrays:
    """A keras.datasets dataset: train and test archives merged, re-split by the pipeline."""
    import keras

    loaders: dict[str, tuple[Callable, list[str] | None]] = {
        "mnist": (keras.datasets.mnist.load_data, None),
        "fashion_mnist": (keras.datasets.fashion_mnist.load_data, FASHION_MNIST_CLASSES),
        "cifar10": (keras.datasets.cifar10.load_data, CIFAR10_CLASSES),
    }
    loader, names = loaders[name]
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(30)  # an unreachable host must not hang the job
    try:
        (x_train, y_train), (x_test, y_test) = loader()
    except Exception as exc:  # noqa: BLE001 - keras wraps every fetch error in Exception
        file, origin = KERAS_ARCHIVES[name]
        reason = str(exc).split(" -- ")[-1].strip() or exc.__class__.__name__
        raise DataNotFoundError(
            f"dataset '{name}' is not in the Keras cache and cannot be downloaded ({reason}): "
            f"fetch {origin} into {keras_cache_dir() / file}, or use data=digits"
        ) from None
    finally:
        socket.setdefaulttimeout(previous)
    images = np.concatenate([x_train, x_test]).astype(np.float32)
    if images.ndim == 3:
        images = images[..., None]
    labels = np.concatenate([y_train, y_test]).reshape(-1).astype(np.int32)
    class_names = names or [str(i) for i in range(int(labels.max()) + 1)]
    return images, labels, class_names
