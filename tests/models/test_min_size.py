"""Each family's minimum input: it builds and runs there, and one pixel less cannot work."""

from __future__ import annotations

import pytest

from tests.models.conftest import images
from trainkit.errors import InputTooSmallError
from trainkit.models import available_models, build_model, get_spec, resolve_input_shape

# One model per family (and per minimum): the others share the builder and the minimum.
FAMILIES = [
    "alexnet",
    "clip_resnet50",
    "inception_resnet_v2",
    "inception_v1",
    "inception_v3",
    "inception_v4",
    "mobilenet_v2",
    "resnet50",
    "resnet50_v2",
    "vgg16",
]
EXPECTED = {
    "alexnet": 67,
    "inception_v1": 31,
    "inception_v3": 75,
    "inception_v4": 75,
    "inception_resnet_v2": 75,
    "vgg16": 32,
    "vgg19": 32,
    "resnet50": 32,
    "resnet50_v2": 32,
    "mobilenet_v2": 32,
    "clip_resnet50": 31,
    "clip_resnet101": 31,
    "clip_resnet50x4": 31,
    "clip_resnet50x16": 31,
}


def test_minimum_sizes():
    assert {name: get_spec(name).min_size for name in available_models()} == EXPECTED


@pytest.mark.parametrize("name", available_models())
def test_one_pixel_less_is_a_one_line_error(name):
    minimum = get_spec(name).min_size
    assert resolve_input_shape(name, minimum) == (minimum, minimum, 3)
    assert resolve_input_shape(name, (minimum, minimum + 40)) == (minimum, minimum + 40, 3)
    for shape in (minimum - 1, (minimum + 10, minimum - 1)):
        with pytest.raises(InputTooSmallError) as error:
            build_model(name, 3, input_shape=shape)
        message = str(error.value)
        assert "\n" not in message
        assert f"at least {minimum}x{minimum}" in message and name in message


@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=[pytest.mark.slow] if n == "inception_v4" else []) for n in FAMILIES],
)
def test_the_architecture_itself_fails_one_pixel_below(name):
    """The registry's minimum is the true one: the builder, unchecked, cannot go lower."""
    spec = get_spec(name)
    size = spec.min_size - 1
    with pytest.raises(ValueError):
        spec.builder(num_classes=3, input_shape=(size, size, 3))


@pytest.mark.parametrize(
    "name", ["inception_v1", pytest.param("clip_resnet50", marks=pytest.mark.slow), "alexnet"]
)
def test_non_square_inputs_at_the_minimum(name):
    minimum = get_spec(name).min_size
    model = build_model(name, 3, input_shape=(minimum, 2 * minimum))
    assert model(images((minimum, 2 * minimum))).shape == (2, 3)
