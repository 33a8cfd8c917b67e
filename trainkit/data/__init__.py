"""Data sources and the tf.data pipeline.

``load(cfg.data, image_size, batch_size, seed)`` returns a :class:`DataBundle`: train,
validation and test ``tf.data`` pipelines of ``(images, labels)`` with images as RGB float32 in
[0, 255] at the model's input size, and the facts about them (class names, split sizes).
"""

from typing import Any

__all__ = ["SOURCES", "DataBundle", "load"]


def __getattr__(name: str) -> Any:
    # Lazy, so that ``trainkit.data.folder`` (numpy only) is checked before TensorFlow loads.
    if name == "DataBundle":
        from trainkit.data.bundle import DataBundle

        return DataBundle
    if name in ("SOURCES", "load"):
        from trainkit.data import loader

        return getattr(loader, name)
    raise AttributeError(f"module 'trainkit.data' has no attribute {name!r}")
