"""The MAC counter of benchmarks/zoo.py."""

from __future__ import annotations

import keras
import pytest

from trainkit.models import build_model
from trainkit.models.complexity import count_macs, layer_macs


def test_counts_convolutions_depthwise_and_dense():
    inputs = keras.Input((10, 10, 3))
    x = keras.layers.Conv2D(8, 3, padding="same")(inputs)  # 10*10 * 3*3*3*8
    x = keras.layers.DepthwiseConv2D(3, strides=2, padding="same")(x)  # 5*5 * 3*3*8
    x = keras.layers.Conv2D(6, 1, groups=2)(x)  # 5*5 * 1*1*4*6
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(4)(x)  # 6*4
    model = keras.Model(inputs, outputs)
    assert count_macs(model) == 100 * 216 + 25 * 72 + 25 * 24 + 24


@pytest.mark.slow
def test_alexnet_and_the_aux_heads_are_not_counted():
    alexnet = build_model("alexnet", 1000)
    convs = 55 * 55 * 11 * 11 * 3 * 96 + 27 * 27 * 5 * 5 * 96 * 256
    convs += 13 * 13 * 9 * (256 * 384 + 384 * 384 + 384 * 256)
    dense = 6 * 6 * 256 * 4096 + 4096 * 4096 + 4096 * 1000
    assert count_macs(alexnet) == convs + dense
    keras.backend.clear_session()
    with_aux = build_model("inception_v1", 10, input_shape=96)
    without = build_model("inception_v1", 10, input_shape=96, aux_heads=False)
    assert count_macs(with_aux) == count_macs(without)


def test_attention_pool():
    pool = build_model("clip_resnet50", 10, input_shape=96).get_layer("attnpool")
    tokens, channels = 3 * 3 + 1, 2048
    expected = (1 + 2 * tokens) * channels**2 + 2 * tokens * channels + channels * 1024
    assert layer_macs(pool) == expected
