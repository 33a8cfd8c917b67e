"""Small building blocks shared by the hand-written families."""

from __future__ import annotations

import math

import keras
from keras import layers, ops


def conv_bn(
    x,
    filters: int,
    kernel: int | tuple[int, int],
    name: str,
    strides: int = 1,
    padding: str = "same",
    scale: bool = False,
):
    """Convolution without bias, BatchNormalization (without scale by default), ReLU.

    This is the unit of Inception v3 as Keras and TF-slim build it: the ReLU follows, so a BN
    scale is redundant with the next layer's weights. The usual Keras Inception-v4 keeps it.
    """
    x = layers.Conv2D(
        filters, kernel, strides=strides, padding=padding, use_bias=False, name=f"{name}_conv"
    )(x)
    x = layers.BatchNormalization(scale=scale, name=f"{name}_bn")(x)
    return layers.Activation("relu", name=name)(x)


def ceil_pool_out(size: int, pool: int = 3, stride: int = 2) -> int:
    """Output length of an unpadded ceil-mode (Caffe) pooling; 0 when the input is too small."""
    if size < 1:
        return 0
    return max(math.ceil((size - pool) / stride) + 1, 0)


def max_pool_ceil(x, name: str, pool: int = 3, stride: int = 2):
    """Max pooling with Caffe's ceil rounding, as GoogLeNet was trained.

    Keras has no ceil mode, so the missing bottom/right border is zero padded first. Only used on
    ReLU outputs (>= 0), where a zero never wins over a real value, so it is exact.
    """
    height, width = x.shape[1], x.shape[2]
    pads = []
    for size in (height, width):
        out = ceil_pool_out(size, pool, stride)
        if out < 1:
            raise ValueError(f"{name}: a {size}-pixel map is too small for a {pool}x{pool} pool")
        pads.append(max((out - 1) * stride + pool - size, 0))
    if any(pads):
        x = layers.ZeroPadding2D(((0, pads[0]), (0, pads[1])), name=f"{name}_pad")(x)
    return layers.MaxPooling2D(pool, strides=stride, padding="valid", name=name)(x)


def _windows(size: int, out: int) -> list[tuple[int, int]]:
    """[start, end) windows pooling ``size`` positions to ``out``.

    When the map allows it, windows of equal size and stride (GoogLeNet's 5x5/3 pooling on a
    14x14 map); otherwise PyTorch's adaptive-pooling bins, which also cover maps smaller than
    ``out`` by repeating positions.
    """
    if size >= out:
        stride = size // out
        window = size - (out - 1) * stride
        return [(i * stride, i * stride + window) for i in range(out)]
    return [(math.floor(i * size / out), math.ceil((i + 1) * size / out)) for i in range(out)]


@keras.saving.register_keras_serializable(package="trainkit")
class FixedGridAveragePool(keras.layers.Layer):
    """Average pooling to a fixed ``grid x grid`` map whatever the input size.

    Auxiliary heads flatten their pooled map into a Dense layer; a fixed grid keeps that layer's
    size (and the parameter count) independent of the input size.
    """

    def __init__(self, grid: int = 4, **kwargs) -> None:
        super().__init__(**kwargs)
        self.grid = grid

    def call(self, inputs):
        rows = _windows(inputs.shape[1], self.grid)
        cols = _windows(inputs.shape[2], self.grid)
        out_rows = []
        for r0, r1 in rows:
            band = inputs[:, r0:r1]
            cells = [ops.mean(band[:, :, c0:c1], axis=(1, 2), keepdims=True) for c0, c1 in cols]
            out_rows.append(ops.concatenate(cells, axis=2))
        return ops.concatenate(out_rows, axis=1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.grid, self.grid, input_shape[3])

    def get_config(self) -> dict:
        return {**super().get_config(), "grid": self.grid}
