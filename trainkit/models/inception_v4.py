"""Inception-v4 (Szegedy et al. 2016, "Inception-v4, Inception-ResNet and the Impact of Residual
Connections on Learning"), by hand.

Figure 9 of the paper: the stem of Figure 3 (299 -> 35x35x384, with its two split-and-concat
reductions), 4 x Inception-A (Figure 4), Reduction-A (Figure 7, k=192, l=224, m=256, n=384),
7 x Inception-B (Figure 5), Reduction-B (Figure 8), 3 x Inception-C (Figure 6), global average
pooling, dropout (keep 0.8) and a softmax classifier. The filter counts follow TF-slim's
reference implementation where the figures are ambiguous. Every convolution is conv (no bias)
+ BatchNorm + ReLU; "V" convolutions and pools are unpadded. 42,679,816 parameters at 1000
classes. The auxiliary head of TF-slim (not in the paper) is omitted.
"""

from __future__ import annotations

from functools import partial

import keras
from keras import layers

from trainkit.models import blocks
from trainkit.models.heads import classifier
from trainkit.models.preprocessing import Preprocess
from trainkit.models.registry import ModelSpec, register
from trainkit.models.weights import load_weights_into

# BatchNorm keeps its scale here (unlike Inception v3): this is the 42,679,816-parameter
# Inception-v4 of the Keras ports.
conv_bn = partial(blocks.conv_bn, scale=True)


def _avg_pool_branch(x, filters: int, name: str):
    x = layers.AveragePooling2D(3, strides=1, padding="same", name=f"{name}_avgpool")(x)
    return conv_bn(x, filters, 1, f"{name}_pool_1x1")


def stem(x):
    """Figure 3: 299x299x3 -> 35x35x384."""
    x = conv_bn(x, 32, 3, "stem_conv1", strides=2, padding="valid")
    x = conv_bn(x, 32, 3, "stem_conv2", padding="valid")
    x = conv_bn(x, 64, 3, "stem_conv3")
    x = layers.Concatenate(name="stem_mixed1")(
        [
            layers.MaxPooling2D(3, strides=2, name="stem_mixed1_maxpool")(x),
            conv_bn(x, 96, 3, "stem_mixed1_conv", strides=2, padding="valid"),
        ]
    )
    left = conv_bn(x, 64, 1, "stem_mixed2_left_1x1")
    left = conv_bn(left, 96, 3, "stem_mixed2_left_3x3", padding="valid")
    right = conv_bn(x, 64, 1, "stem_mixed2_right_1x1")
    right = conv_bn(right, 64, (1, 7), "stem_mixed2_right_1x7")
    right = conv_bn(right, 64, (7, 1), "stem_mixed2_right_7x1")
    right = conv_bn(right, 96, 3, "stem_mixed2_right_3x3", padding="valid")
    x = layers.Concatenate(name="stem_mixed2")([left, right])
    return layers.Concatenate(name="stem_mixed3")(
        [
            conv_bn(x, 192, 3, "stem_mixed3_conv", strides=2, padding="valid"),
            layers.MaxPooling2D(3, strides=2, name="stem_mixed3_maxpool")(x),
        ]
    )


def inception_a(x, name: str):
    """Figure 4, 35x35x384."""
    b0 = conv_bn(x, 96, 1, f"{name}_1x1")
    b1 = conv_bn(x, 64, 1, f"{name}_3x3_reduce")
    b1 = conv_bn(b1, 96, 3, f"{name}_3x3")
    b2 = conv_bn(x, 64, 1, f"{name}_3x3dbl_reduce")
    b2 = conv_bn(b2, 96, 3, f"{name}_3x3dbl_1")
    b2 = conv_bn(b2, 96, 3, f"{name}_3x3dbl_2")
    b3 = _avg_pool_branch(x, 96, name)
    return layers.Concatenate(name=name)([b0, b1, b2, b3])


def reduction_a(x, name: str, k: int = 192, l: int = 224, m: int = 256, n: int = 384):  # noqa: E741
    """Figure 7, 35x35 -> 17x17x1024 (Table 1's filter counts for Inception-v4)."""
    b0 = conv_bn(x, n, 3, f"{name}_3x3", strides=2, padding="valid")
    b1 = conv_bn(x, k, 1, f"{name}_3x3dbl_reduce")
    b1 = conv_bn(b1, l, 3, f"{name}_3x3dbl_1")
    b1 = conv_bn(b1, m, 3, f"{name}_3x3dbl_2", strides=2, padding="valid")
    b2 = layers.MaxPooling2D(3, strides=2, name=f"{name}_maxpool")(x)
    return layers.Concatenate(name=name)([b0, b1, b2])


def inception_b(x, name: str):
    """Figure 5, 17x17x1024."""
    b0 = conv_bn(x, 384, 1, f"{name}_1x1")
    b1 = conv_bn(x, 192, 1, f"{name}_7x7_reduce")
    b1 = conv_bn(b1, 224, (1, 7), f"{name}_7x7_1")
    b1 = conv_bn(b1, 256, (7, 1), f"{name}_7x7_2")
    b2 = conv_bn(x, 192, 1, f"{name}_7x7dbl_reduce")
    b2 = conv_bn(b2, 192, (7, 1), f"{name}_7x7dbl_1")
    b2 = conv_bn(b2, 224, (1, 7), f"{name}_7x7dbl_2")
    b2 = conv_bn(b2, 224, (7, 1), f"{name}_7x7dbl_3")
    b2 = conv_bn(b2, 256, (1, 7), f"{name}_7x7dbl_4")
    b3 = _avg_pool_branch(x, 128, name)
    return layers.Concatenate(name=name)([b0, b1, b2, b3])


def reduction_b(x, name: str):
    """Figure 8, 17x17 -> 8x8x1536."""
    b0 = conv_bn(x, 192, 1, f"{name}_3x3_reduce")
    b0 = conv_bn(b0, 192, 3, f"{name}_3x3", strides=2, padding="valid")
    b1 = conv_bn(x, 256, 1, f"{name}_7x7x3_reduce")
    b1 = conv_bn(b1, 256, (1, 7), f"{name}_7x7x3_1")
    b1 = conv_bn(b1, 320, (7, 1), f"{name}_7x7x3_2")
    b1 = conv_bn(b1, 320, 3, f"{name}_7x7x3_3", strides=2, padding="valid")
    b2 = layers.MaxPooling2D(3, strides=2, name=f"{name}_maxpool")(x)
    return layers.Concatenate(name=name)([b0, b1, b2])


def inception_c(x, name: str):
    """Figure 6, 8x8x1536."""
    b0 = conv_bn(x, 256, 1, f"{name}_1x1")
    b1 = conv_bn(x, 384, 1, f"{name}_3x3_reduce")
    b1 = layers.Concatenate(name=f"{name}_3x3")(
        [conv_bn(b1, 256, (1, 3), f"{name}_1x3"), conv_bn(b1, 256, (3, 1), f"{name}_3x1")]
    )
    b2 = conv_bn(x, 384, 1, f"{name}_3x3dbl_reduce")
    b2 = conv_bn(b2, 448, (3, 1), f"{name}_3x3dbl_3x1")
    b2 = conv_bn(b2, 512, (1, 3), f"{name}_3x3dbl_1x3")
    b2 = layers.Concatenate(name=f"{name}_3x3dbl")(
        [conv_bn(b2, 256, (1, 3), f"{name}_dbl_1x3"), conv_bn(b2, 256, (3, 1), f"{name}_dbl_3x1")]
    )
    b3 = _avg_pool_branch(x, 256, name)
    return layers.Concatenate(name=name)([b0, b1, b2, b3])


def build_inception_v4(
    num_classes: int,
    input_shape: tuple[int, int, int],
    weights: str | None = None,
    dropout: float = 0.2,
) -> keras.Model:
    """Options: ``dropout`` before the classifier (0.2: the paper keeps 0.8)."""
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = Preprocess("tf", name="preprocess")(inputs)
    x = stem(x)
    for index in range(4):
        x = inception_a(x, f"inception_a{index + 1}")
    x = reduction_a(x, "reduction_a")
    for index in range(7):
        x = inception_b(x, f"inception_b{index + 1}")
    x = reduction_b(x, "reduction_b")
    for index in range(3):
        x = inception_c(x, f"inception_c{index + 1}")
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if dropout:
        x = layers.Dropout(dropout, name="head_dropout")(x)
    model = keras.Model(inputs, classifier(x, num_classes), name="inception_v4")
    if weights:
        load_weights_into(model, weights)
    return model


register(
    ModelSpec(
        name="inception_v4",
        family="inception_v4",
        native_size=299,
        # Five unpadded stride-2 steps (stem x3, reductions x2) and two 3x3 "V" convolutions.
        min_size=75,
        preprocessing="tf",
        builder=build_inception_v4,
        description="Inception-v4, stem + 4A / 7B / 3C blocks (Szegedy et al. 2016)",
        options={"dropout": 0.2},
    )
)
