"""Each family's input preprocessing, as the model's first layer.

Models take RGB floats in [0, 255]; this layer maps them to what the family was designed for.
It lives inside the model so that training, evaluation, the predict task and an exported
model apply it exactly once.
"""

from __future__ import annotations

import keras
from keras import ops

# ImageNet statistics used by the original implementations.
CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

KINDS = ("caffe", "tf", "clip", "unit")


@keras.saving.register_keras_serializable(package="trainkit")
class Preprocess(keras.layers.Layer):
    """Maps RGB in [0, 255] to a family's input range.

    kinds:
        ``caffe``: RGB to BGR, minus the ImageNet mean (VGG, ResNet50).
        ``tf``: scaled to [-1, 1] (Inception, MobileNetV2, ResNet50V2, AlexNet).
        ``clip``: scaled to [0, 1], then CLIP's per-channel mean and std.
        ``unit``: scaled to [0, 1].
    """

    def __init__(self, kind: str, **kwargs) -> None:
        super().__init__(**kwargs)
        if kind not in KINDS:
            raise ValueError(f"unknown preprocessing {kind!r}: choose one of {KINDS}")
        self.kind = kind

    def call(self, inputs):
        x = ops.cast(inputs, self.compute_dtype)
        if self.kind == "caffe":
            x = ops.flip(x, axis=-1)
            return x - ops.convert_to_tensor(CAFFE_BGR_MEAN, dtype=self.compute_dtype)
        if self.kind == "tf":
            return x / 127.5 - 1.0
        x = x / 255.0
        if self.kind == "clip":
            mean = ops.convert_to_tensor(CLIP_MEAN, dtype=self.compute_dtype)
            std = ops.convert_to_tensor(CLIP_STD, dtype=self.compute_dtype)
            x = (x - mean) / std
        return x

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        return {**super().get_config(), "kind": self.kind}
