"""Data sources and the tf.data pipeline.

``load(cfg.data, image_size, batch_size, seed)`` returns a :class:`DataBundle`: train,
validation and test ``tf.data`` pipelines of ``(images, labels)`` with images as RGB float32 in
[0, 255] at the model's input size, and the facts about them (class names, split sizes).
"""

from trainkit.data.bundle import DataBundle
from trainkit.data.loader import SOURCES, load

__all__ = ["SOURCES", "DataBundle", "load"]
