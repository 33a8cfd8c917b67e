"""CLIP's image encoders of the ResNet kind (Radford et al. 2021, ``ModifiedResNet``), in Keras.

Differences from a torchvision ResNet, as in OpenAI's ``clip/model.py``:

* a stem of three 3x3 convolutions (the first with stride 2) and a 2x2 average pool instead of
  one 7x7 convolution and a max pool;
* anti-aliased downsampling: the bottleneck's convolutions all have stride 1 and a 2x2 average
  pool follows the 3x3 convolution (and precedes the shortcut's 1x1 convolution);
* attention pooling instead of global average pooling: the mean of the final map, prepended to
  its positions, plus a learnt positional embedding, is the single query of a multi-head
  attention over all the positions; its output projection gives the embedding.

The positional embedding is stored at the native grid (input / 32) and resized bicubically when
the input size differs, so the weights are the same for every input size. A float32 softmax
classifier ``predictions`` sits on the embedding (CLIP itself compares it with text embeddings).
BatchNorm follows PyTorch (epsilon 1e-5); the last BN of each block starts at zero, as CLIP's
initialisation does.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import keras
from keras import layers, ops

from trainkit.models.heads import classifier
from trainkit.models.preprocessing import Preprocess
from trainkit.models.registry import ModelSpec, register
from trainkit.models.weights import load_weights_into

BN_EPSILON = 1e-5
BN_MOMENTUM = 0.9  # PyTorch's momentum 0.1, in Keras' convention


@dataclass(frozen=True)
class ClipConfig:
    blocks: tuple[int, int, int, int]
    width: int
    embed_dim: int
    native_size: int

    @property
    def heads(self) -> int:
        return self.width * 32 // 64


CONFIGS = {
    "clip_resnet50": ClipConfig((3, 4, 6, 3), 64, 1024, 224),
    "clip_resnet101": ClipConfig((3, 4, 23, 3), 64, 512, 224),
    "clip_resnet50x4": ClipConfig((4, 6, 10, 6), 80, 640, 288),
    "clip_resnet50x16": ClipConfig((6, 8, 18, 8), 96, 768, 384),
}


def resize_positional_embedding(
    embedding, native_grid: int, height: int, width: int, interpolation: str = "bicubic"
):
    """Resize a ``(native_grid**2 + 1, C)`` embedding to ``(height * width + 1, C)``.

    The first row belongs to the mean token and is kept; the others form a grid that is
    resized like an image.
    """
    channels = embedding.shape[-1]
    grid = ops.reshape(embedding[1:], (1, native_grid, native_grid, channels))
    grid = ops.image.resize(grid, (height, width), interpolation=interpolation)
    grid = ops.reshape(grid, (height * width, channels))
    return ops.concatenate([embedding[:1], ops.cast(grid, embedding.dtype)], axis=0)


@keras.saving.register_keras_serializable(package="trainkit")
class AttentionPool2d(keras.layers.Layer):
    """CLIP's QKV attention pooling of a ``(B, H, W, C)`` map into a ``(B, output_dim)`` vector."""

    def __init__(
        self,
        num_heads: int,
        output_dim: int,
        native_grid: int,
        interpolation: str = "bicubic",
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.num_heads = num_heads
        self.output_dim = output_dim
        self.native_grid = native_grid
        self.interpolation = interpolation

    def build(self, input_shape) -> None:
        channels = int(input_shape[-1])
        if channels % self.num_heads:
            raise ValueError(f"{channels} channels do not split into {self.num_heads} heads")
        std = channels**-0.5
        init = keras.initializers.RandomNormal(stddev=std)
        self.positional_embedding = self.add_weight(
            shape=(self.native_grid**2 + 1, channels),
            initializer=init,
            name="positional_embedding",
        )
        for proj, units in (
            ("q_proj", channels),
            ("k_proj", channels),
            ("v_proj", channels),
            ("c_proj", self.output_dim),
        ):
            dense = layers.Dense(units, kernel_initializer=init, name=proj, dtype=self.dtype_policy)
            dense.build((None, channels))
            setattr(self, proj, dense)

    def positional_embedding_for(self, height: int, width: int):
        if (height, width) == (self.native_grid, self.native_grid):
            return self.positional_embedding
        return resize_positional_embedding(
            self.positional_embedding, self.native_grid, height, width, self.interpolation
        )

    def call(self, inputs):
        height, width, channels = inputs.shape[1], inputs.shape[2], inputs.shape[3]
        head_dim = channels // self.num_heads
        tokens = ops.reshape(inputs, (-1, height * width, channels))
        tokens = ops.concatenate([ops.mean(tokens, axis=1, keepdims=True), tokens], axis=1)
        tokens = tokens + ops.cast(self.positional_embedding_for(height, width), tokens.dtype)

        def split(x):  # (B, L, C) -> (B, heads, L, head_dim)
            x = ops.reshape(x, (-1, x.shape[1], self.num_heads, head_dim))
            return ops.transpose(x, (0, 2, 1, 3))

        # Only the mean token's output is used, so it is the only query computed.
        query = split(self.q_proj(tokens[:, :1])) * ops.cast(head_dim**-0.5, tokens.dtype)
        key, value = split(self.k_proj(tokens)), split(self.v_proj(tokens))
        logits = ops.matmul(query, ops.transpose(key, (0, 1, 3, 2)))
        # Softmax in float32: under mixed_bfloat16 the logits' rounding is coarse.
        weights = ops.cast(ops.softmax(ops.cast(logits, "float32"), axis=-1), value.dtype)
        pooled = ops.reshape(ops.matmul(weights, value), (-1, channels))
        return self.c_proj(pooled)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.output_dim)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "num_heads": self.num_heads,
            "output_dim": self.output_dim,
            "native_grid": self.native_grid,
            "interpolation": self.interpolation,
        }


def _conv_bn(x, filters: int, kernel: int, name: str, relu: bool = True, zero_gamma=False):
    x = layers.Conv2D(filters, kernel, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(
        epsilon=BN_EPSILON,
        momentum=BN_MOMENTUM,
        name=f"{name}_bn",
        gamma_initializer="zeros" if zero_gamma else "ones",
    )(x)
    return layers.Activation("relu", name=f"{name}_relu")(x) if relu else x


def bottleneck(x, planes: int, stride: int, name: str):
    """CLIP's bottleneck: stride-1 convolutions, average pooling where ResNet strides."""
    out = _conv_bn(x, planes, 1, f"{name}_1")
    out = _conv_bn(out, planes, 3, f"{name}_2")
    if stride > 1:
        out = layers.AveragePooling2D(stride, name=f"{name}_avgpool")(out)
    out = _conv_bn(out, planes * 4, 1, f"{name}_3", relu=False, zero_gamma=True)
    shortcut = x
    if stride > 1 or x.shape[-1] != planes * 4:
        if stride > 1:
            shortcut = layers.AveragePooling2D(stride, name=f"{name}_down_avgpool")(shortcut)
        shortcut = _conv_bn(shortcut, planes * 4, 1, f"{name}_down", relu=False)
    out = layers.Add(name=f"{name}_add")([out, shortcut])
    return layers.Activation("relu", name=f"{name}_out")(out)


def clip_encoder(x, config: ClipConfig, interpolation: str = "bicubic"):
    """The ModifiedResNet image encoder: preprocessed image -> ``config.embed_dim`` vector."""
    half = config.width // 2
    # PyTorch pads 1 pixel on every side; Keras' "same" would pad only bottom/right at stride 2.
    x = layers.ZeroPadding2D(1, name="stem_pad")(x)
    x = layers.Conv2D(half, 3, strides=2, use_bias=False, name="stem_1_conv")(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name="stem_1_bn")(x)
    x = layers.Activation("relu", name="stem_1_relu")(x)
    x = _conv_bn(x, half, 3, "stem_2")
    x = _conv_bn(x, config.width, 3, "stem_3")
    x = layers.AveragePooling2D(2, name="stem_avgpool")(x)
    for stage, blocks in enumerate(config.blocks):
        planes = config.width * 2**stage
        for block in range(blocks):
            stride = 2 if stage > 0 and block == 0 else 1
            x = bottleneck(x, planes, stride, f"layer{stage + 1}_block{block}")
    return AttentionPool2d(
        config.heads, config.embed_dim, config.native_size // 32, interpolation, name="attnpool"
    )(x)


def build_clip_resnet(
    num_classes: int,
    input_shape: tuple[int, int, int],
    weights: str | None = None,
    dropout: float = 0.0,
    interpolation: str = "bicubic",
    *,
    name: str,
) -> keras.Model:
    """Options: ``dropout`` on the embedding, ``interpolation`` of the positional embedding."""
    config = CONFIGS[name]
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = Preprocess("clip", name="preprocess")(inputs)
    x = clip_encoder(x, config, interpolation)
    if dropout:
        x = layers.Dropout(dropout, name="head_dropout")(x)
    model = keras.Model(inputs, classifier(x, num_classes), name=name)
    if weights:
        load_weights_into(model, weights)
    return model


for _name, _config in CONFIGS.items():
    register(
        ModelSpec(
            name=_name,
            family="clip_resnet",
            native_size=_config.native_size,
            # Five halvings that floor (stem conv rounds up): 31 pixels leave a 1x1 map.
            min_size=31,
            preprocessing="clip",
            builder=partial(build_clip_resnet, name=_name),
            description=(
                f"CLIP {_name.removeprefix('clip_').replace('resnet', 'RN')} image encoder "
                f"({_config.embed_dim}-d attention-pooled embedding) + linear classifier"
            ),
            options={"dropout": 0.0, "interpolation": "bicubic"},
        )
    )
