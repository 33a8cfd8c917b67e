"""Inception v3 (Szegedy et al. 2016, "Rethinking the Inception Architecture"), by hand.

The network of Table 1 / Figures 5-7 of the paper as Keras and TF-slim build it: a stem of
five convolutions and two max pools (299 -> 35 pixels), three 35x35 modules with a factorised
5x5 branch and a double 3x3 branch, a grid reduction to 17x17, four 17x17 modules with 1x7 /
7x1 factorised convolutions, a reduction to 8x8 and two 8x8 modules with expanded 1x3 / 3x1
branches. Every convolution is conv (no bias) + BatchNorm (no scale) + ReLU. Global average
pooling, dropout and a softmax classifier. No auxiliary head. 23,817,352 trainable parameters
at 1000 classes.

The layers are created in the order of ``keras.applications.InceptionV3``, so its ImageNet
files load into this model (``weights="imagenet"``) by position, as Keras loads them itself.
"""

from __future__ import annotations

import keras
from keras import layers

from trainkit.errors import WeightsNotAvailableError
from trainkit.models.blocks import conv_bn
from trainkit.models.heads import classifier
from trainkit.models.imagenet import BASE_URL, WeightsFile, fetch
from trainkit.models.preprocessing import Preprocess
from trainkit.models.registry import ModelSpec, is_head_layer, register
from trainkit.models.weights import all_layers, load_weights_into, one_line

IMAGENET_FILES = {
    True: WeightsFile(
        "inception_v3_weights_tf_dim_ordering_tf_kernels.h5",
        f"{BASE_URL}inception_v3/inception_v3_weights_tf_dim_ordering_tf_kernels.h5",
        "9a0d58056eeedaa3f26cb7ebd46da564",
    ),
    False: WeightsFile(
        "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
        f"{BASE_URL}inception_v3/inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
        "bcbd6486424b2319ff4ef7d526e38f63",
    ),
}


def _pool_branch(x, filters: int, name: str):
    x = layers.AveragePooling2D(3, strides=1, padding="same", name=f"{name}_avgpool")(x)
    return conv_bn(x, filters, 1, f"{name}_pool_1x1")


def block_35(x, pool_filters: int, name: str):
    """35x35 module (Figure 5): 1x1, 5x5 (as in Keras), double 3x3, pool projection."""
    b1 = conv_bn(x, 64, 1, f"{name}_1x1")
    b5 = conv_bn(x, 48, 1, f"{name}_5x5_reduce")
    b5 = conv_bn(b5, 64, 5, f"{name}_5x5")
    b3 = conv_bn(x, 64, 1, f"{name}_3x3dbl_reduce")
    b3 = conv_bn(b3, 96, 3, f"{name}_3x3dbl_1")
    b3 = conv_bn(b3, 96, 3, f"{name}_3x3dbl_2")
    bp = _pool_branch(x, pool_filters, name)
    return layers.Concatenate(name=name)([b1, b5, b3, bp])


def reduction_35(x, name: str):
    """35x35 -> 17x17 grid reduction (Figure 10)."""
    b3 = conv_bn(x, 384, 3, f"{name}_3x3", strides=2, padding="valid")
    bd = conv_bn(x, 64, 1, f"{name}_3x3dbl_reduce")
    bd = conv_bn(bd, 96, 3, f"{name}_3x3dbl_1")
    bd = conv_bn(bd, 96, 3, f"{name}_3x3dbl_2", strides=2, padding="valid")
    bp = layers.MaxPooling2D(3, strides=2, name=f"{name}_maxpool")(x)
    return layers.Concatenate(name=name)([b3, bd, bp])


def block_17(x, width: int, name: str):
    """17x17 module (Figure 6) with n=7 factorisation; ``width`` is the inner filter count."""
    b1 = conv_bn(x, 192, 1, f"{name}_1x1")
    b7 = conv_bn(x, width, 1, f"{name}_7x7_reduce")
    b7 = conv_bn(b7, width, (1, 7), f"{name}_7x7_1")
    b7 = conv_bn(b7, 192, (7, 1), f"{name}_7x7_2")
    bd = conv_bn(x, width, 1, f"{name}_7x7dbl_reduce")
    bd = conv_bn(bd, width, (7, 1), f"{name}_7x7dbl_1")
    bd = conv_bn(bd, width, (1, 7), f"{name}_7x7dbl_2")
    bd = conv_bn(bd, width, (7, 1), f"{name}_7x7dbl_3")
    bd = conv_bn(bd, 192, (1, 7), f"{name}_7x7dbl_4")
    bp = _pool_branch(x, 192, name)
    return layers.Concatenate(name=name)([b1, b7, bd, bp])


def reduction_17(x, name: str):
    """17x17 -> 8x8 grid reduction."""
    b3 = conv_bn(x, 192, 1, f"{name}_3x3_reduce")
    b3 = conv_bn(b3, 320, 3, f"{name}_3x3", strides=2, padding="valid")
    b7 = conv_bn(x, 192, 1, f"{name}_7x7x3_reduce")
    b7 = conv_bn(b7, 192, (1, 7), f"{name}_7x7x3_1")
    b7 = conv_bn(b7, 192, (7, 1), f"{name}_7x7x3_2")
    b7 = conv_bn(b7, 192, 3, f"{name}_7x7x3_3", strides=2, padding="valid")
    bp = layers.MaxPooling2D(3, strides=2, name=f"{name}_maxpool")(x)
    return layers.Concatenate(name=name)([b3, b7, bp])


def block_8(x, name: str):
    """8x8 module with expanded filter banks (Figure 7)."""
    b1 = conv_bn(x, 320, 1, f"{name}_1x1")
    b3 = conv_bn(x, 384, 1, f"{name}_3x3_reduce")
    b3 = layers.Concatenate(name=f"{name}_3x3")(
        [conv_bn(b3, 384, (1, 3), f"{name}_1x3"), conv_bn(b3, 384, (3, 1), f"{name}_3x1")]
    )
    bd = conv_bn(x, 448, 1, f"{name}_3x3dbl_reduce")
    bd = conv_bn(bd, 384, 3, f"{name}_3x3dbl")
    bd = layers.Concatenate(name=f"{name}_3x3dbl_split")(
        [conv_bn(bd, 384, (1, 3), f"{name}_dbl_1x3"), conv_bn(bd, 384, (3, 1), f"{name}_dbl_3x1")]
    )
    bp = _pool_branch(x, 192, name)
    return layers.Concatenate(name=name)([b1, b3, bd, bp])


def build_inception_v3(
    num_classes: int,
    input_shape: tuple[int, int, int],
    weights: str | None = None,
    dropout: float = 0.2,
    download_weights: bool = False,
) -> keras.Model:
    """Options: ``dropout`` before the classifier (0.2, as TF-slim); ``download_weights``."""
    imagenet_file = None
    if weights == "imagenet":  # find the file before spending time on building
        imagenet_file = fetch("inception_v3", IMAGENET_FILES[num_classes == 1000], download_weights)
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = Preprocess("tf", name="preprocess")(inputs)
    x = conv_bn(x, 32, 3, "stem_conv1", strides=2, padding="valid")
    x = conv_bn(x, 32, 3, "stem_conv2", padding="valid")
    x = conv_bn(x, 64, 3, "stem_conv3")
    x = layers.MaxPooling2D(3, strides=2, name="stem_pool1")(x)
    x = conv_bn(x, 80, 1, "stem_conv4", padding="valid")
    x = conv_bn(x, 192, 3, "stem_conv5", padding="valid")
    x = layers.MaxPooling2D(3, strides=2, name="stem_pool2")(x)
    for index, pool_filters in enumerate((32, 64, 64)):
        x = block_35(x, pool_filters, f"mixed{index}")
    x = reduction_35(x, "mixed3")
    for index, width in enumerate((128, 160, 160, 192), start=4):
        x = block_17(x, width, f"mixed{index}")
    x = reduction_17(x, "mixed8")
    x = block_8(x, "mixed9")
    x = block_8(x, "mixed10")
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if dropout:
        x = layers.Dropout(dropout, name="head_dropout")(x)
    model = keras.Model(inputs, classifier(x, num_classes), name="inception_v3")
    if imagenet_file is not None:
        load_imagenet(model, imagenet_file, input_shape, with_top=num_classes == 1000)
    elif weights:
        load_weights_into(model, weights)
    return model


def load_imagenet(model: keras.Model, path, input_shape, with_top: bool) -> None:
    """Copy keras.applications.InceptionV3's ImageNet weights (file ``path``) by position."""
    try:
        reference = keras.applications.InceptionV3(
            include_top=with_top, weights=str(path), input_shape=tuple(input_shape)
        )
    except (OSError, ValueError) as exc:
        raise WeightsNotAvailableError(f"cannot load {path}: {one_line(exc)}") from None
    copy_by_position(reference, model, include_head=with_top)


def copy_by_position(reference: keras.Model, model: keras.Model, include_head: bool) -> None:
    """Copy weights layer by layer in creation order (the layer names differ from Keras')."""
    targets = [
        layer
        for layer in all_layers(model)
        if layer.weights and (include_head or not is_head_layer(layer))
    ]
    sources = [layer for layer in reference.layers if layer.weights]
    if len(sources) != len(targets):
        raise WeightsNotAvailableError(
            f"{reference.name} has {len(sources)} layers with weights, {model.name} "
            f"{len(targets)}: the architectures differ"
        )
    for source, target in zip(sources, targets, strict=True):
        values = source.get_weights()
        if [v.shape for v in values] != [tuple(w.shape) for w in target.weights]:
            raise WeightsNotAvailableError(
                f"{reference.name} layer {source.name} does not fit {model.name} layer "
                f"{target.name}: the architectures differ"
            )
        target.set_weights(values)


register(
    ModelSpec(
        name="inception_v3",
        family="inception_v3",
        native_size=299,
        # Valid 3x3/2 convolutions and pools: 75 pixels leave a 1x1 map after the last reduction.
        min_size=75,
        preprocessing="tf",
        builder=build_inception_v3,
        imagenet_weights=True,
        description="Inception v3, factorised 7x7 / 3x3 modules, ImageNet weights via Keras",
        options={"dropout": 0.2, "download_weights": False},
    )
)
