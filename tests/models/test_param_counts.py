"""Trainable parameters at 1000 classes and the native input, against the reference table.

The eight models that take 5-25 s each to build at their native size (:data:`HEAVY`) are
counted against the same table where they are built anyway, at their minimum input, by
tests/models/test_training.py (their count does not depend on the input size: global pooling,
and CLIP's positional embedding is kept at the native grid; a count that did would miss the
table there). Here every model's native size is checked, and the other six are built at it.
"""

from __future__ import annotations

import pytest

from tests.models.conftest import trainable_count
from trainkit.models import available_models, build_model, get_spec

# Reference trainable parameter counts (the zoo's specification). keras.applications models must
# match exactly; the hand-written ones within 0.1%. CLIP: encoder + (embedding + 1) x 1000 head.
REFERENCE = {
    "alexnet": 62_378_344,
    "inception_v1": 13_378_280,  # with the auxiliary heads (the default)
    "inception_v3": 23_817_352,
    "inception_v4": 42_679_816,
    "inception_resnet_v2": 55_813_192,
    "vgg16": 138_357_544,
    "vgg19": 143_667_240,
    "resnet50": 25_583_592,
    "resnet50_v2": 25_568_360,
    "mobilenet_v2": 3_504_872,
    "clip_resnet50": 38_316_896 + 1_025_000,
    "clip_resnet101": 56_259_936 + 513_000,
    "clip_resnet50x4": 87_137_080 + 641_000,
    "clip_resnet50x16": 167_328_912 + 769_000,
}
NATIVE = {
    "alexnet": 227,
    "inception_v1": 224,
    "inception_v3": 299,
    "inception_v4": 299,
    "inception_resnet_v2": 299,
    "vgg16": 224,
    "vgg19": 224,
    "resnet50": 224,
    "resnet50_v2": 224,
    "mobilenet_v2": 224,
    "clip_resnet50": 224,
    "clip_resnet101": 224,
    "clip_resnet50x4": 288,
    "clip_resnet50x16": 384,
}


def test_the_zoo_has_the_fourteen_models():
    assert sorted(REFERENCE) == available_models()


# Building the largest models at their native size takes 5-25 s each: counted in test_training.
HEAVY = {
    "clip_resnet50",
    "clip_resnet101",
    "clip_resnet50x4",
    "clip_resnet50x16",
    "inception_v3",
    "inception_v4",
    "inception_resnet_v2",
    "mobilenet_v2",
}


def assert_reference_count(name: str, model) -> None:
    """``model`` (1000 classes) has the table's trainable parameters: keras.applications ones
    exactly, the hand-written ones within 0.1%."""
    count = trainable_count(model)
    if get_spec(name).family == "applications":
        assert count == REFERENCE[name]
    else:
        assert abs(count - REFERENCE[name]) <= 0.001 * REFERENCE[name], count


def test_native_sizes():
    assert {name: get_spec(name).native_size for name in REFERENCE} == NATIVE


@pytest.mark.parametrize("name", sorted(set(REFERENCE) - HEAVY))
def test_trainable_parameters(name):
    model = build_model(name, 1000)
    assert model.input_shape == (None, NATIVE[name], NATIVE[name], 3)
    assert_reference_count(name, model)


@pytest.mark.parametrize("units", [4096, 256])
def test_alexnet_fc_units_is_the_width_of_fc1_and_fc2(units):
    model = build_model("alexnet", 1000, fc_units=units)
    assert model.get_layer("fc1").units == model.get_layer("fc2").units == units
    convolutions = 34_944 + 614_656 + 885_120 + 1_327_488 + 884_992  # conv1-conv5
    flat = 6 * 6 * 256
    expected = convolutions + (flat + 1) * units + (units + 1) * units + (units + 1) * 1000
    assert trainable_count(model) == expected
    if units == 4096:
        assert expected == REFERENCE["alexnet"]


def test_inception_v1_without_aux_heads():
    assert trainable_count(build_model("inception_v1", 1000, aux_heads=False)) == 6_998_552


@pytest.mark.parametrize(
    ("name", "encoder", "dim"),
    [
        ("clip_resnet50", 38_316_896, 1024),
        pytest.param("clip_resnet101", 56_259_936, 512, marks=pytest.mark.slow),
    ],
)
def test_clip_encoder_alone(name, encoder, dim):
    """The encoder's share is the reference figure; the head is a (dim + 1) x classes Dense."""
    model = build_model(name, 7)
    head = model.get_layer("predictions")
    assert head.kernel.shape == (dim, 7)
    assert trainable_count(model) - dim * 7 - 7 == encoder
