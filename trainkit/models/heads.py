"""Classification heads shared by the families.

The last Dense layer and its softmax always compute in float32, so a model built under the
``mixed_bfloat16`` policy still returns float32 probabilities (and a float32 loss).
"""

from __future__ import annotations

import keras


def classifier(x, num_classes: int, name: str = "predictions"):
    """A Dense softmax layer in float32 on top of ``x``."""
    return keras.layers.Dense(num_classes, activation="softmax", dtype="float32", name=name)(x)
