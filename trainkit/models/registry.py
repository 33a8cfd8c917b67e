"""The model registry: one name per architecture, one function to build any of them.

Each family module registers its models with :func:`register`. :func:`build_model` checks the
name, the input size and the weights, then calls the family's builder. Every built model takes
raw RGB images with values in [0, 255] (float32) and applies its family's preprocessing as its
first layer, so the data pipeline, the predict task and an exported model all feed it the same
thing.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import keras

from trainkit.errors import ConfigError, InputTooSmallError, WeightsNotAvailableError

Builder = Callable[..., keras.Model]


@dataclass(frozen=True)
class ModelSpec:
    """What the registry knows about one architecture.

    Attributes:
        name: the registry and config name (``conf/model/<name>.yaml``).
        family: the module that builds it (``alexnet``, ``inception`` ...).
        native_size: the input side length the reference architecture uses.
        min_size: the smallest input side length the architecture accepts.
        preprocessing: ``caffe``, ``tf`` ([-1, 1]), ``clip`` or ``unit`` ([0, 1]).
        builder: ``builder(num_classes, input_shape, weights, **options) -> keras.Model``.
        imagenet_weights: whether ``weights="imagenet"`` is available (keras.applications).
        description: one line for ``python -m trainkit.models``.
        options: the builder's extra options and their defaults (documentation only).
    """

    name: str
    family: str
    native_size: int
    min_size: int
    preprocessing: str
    builder: Builder
    imagenet_weights: bool = False
    description: str = ""
    options: dict[str, Any] = field(default_factory=dict)


_REGISTRY: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
    if spec.name in _REGISTRY:
        raise ValueError(f"model {spec.name!r} is registered twice")
    _REGISTRY[spec.name] = spec
    return spec


def available_models() -> list[str]:
    return sorted(_REGISTRY)


def get_spec(name: str) -> ModelSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(
            f"unknown model '{name}': choose one of {', '.join(available_models())}"
        ) from None


def resolve_input_shape(
    name: str, input_shape: tuple[int, ...] | int | None
) -> tuple[int, int, int]:
    """The (height, width, 3) input for ``name``; the native size when ``input_shape`` is None."""
    spec = get_spec(name)
    if input_shape is None:
        return (spec.native_size, spec.native_size, 3)
    if isinstance(input_shape, int):
        input_shape = (input_shape, input_shape, 3)
    if len(input_shape) == 2:
        input_shape = (*input_shape, 3)
    height, width, channels = (int(v) for v in input_shape)
    if channels != 3:
        raise ConfigError(f"model '{name}' takes RGB images (3 channels), got {channels}")
    smallest = min(height, width)
    if smallest < spec.min_size:
        raise InputTooSmallError(name, smallest, spec.min_size)
    return (height, width, channels)


def build_model(
    name: str,
    num_classes: int,
    input_shape: tuple[int, ...] | int | None = None,
    weights: str | None = None,
    **options: Any,
) -> keras.Model:
    """Build the registered model ``name`` with a ``num_classes`` softmax head, uncompiled.

    Args:
        name: a registry name, see :func:`available_models`.
        num_classes: size of the classification head.
        input_shape: ``(h, w, 3)``, ``(h, w)`` or a side length; None for the native size.
        weights: None (random), ``"imagenet"`` (keras.applications models only) or the path
            of a ``.weights.h5`` / ``.keras`` file.
        **options: family options (``dropout``, ``aux_heads`` ...).

    Raises:
        ConfigError: unknown name, too small an input, bad options.
        WeightsNotAvailableError: the weights cannot be found or loaded.
    """
    spec = get_spec(name)
    if num_classes < 1:
        raise ConfigError(f"num_classes must be at least 1, got {num_classes}")
    shape = resolve_input_shape(name, input_shape)
    if weights == "imagenet" and not spec.imagenet_weights:
        # Before building: the big models take seconds to build for nothing.
        with_weights = ", ".join(n for n in available_models() if _REGISTRY[n].imagenet_weights)
        raise WeightsNotAvailableError(
            f"model '{name}' has no ImageNet weights (these have: {with_weights}): use "
            "model.weights=null or the path of a .keras / .weights.h5 file"
        )
    unknown = _unknown_options(spec.builder, options)
    if unknown:
        raise ConfigError(
            f"model '{name}' has no option {', '.join(sorted(unknown))}: its options are "
            f"{', '.join(spec.options) or 'none'}"
        )
    return spec.builder(num_classes=num_classes, input_shape=shape, weights=weights, **options)


def _unknown_options(builder: Builder, options: dict[str, Any]) -> set[str]:
    parameters = inspect.signature(builder).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return set()  # the builder checks its options itself
    return set(options) - (set(parameters) - {"num_classes", "input_shape", "weights"})


HEAD_PREFIX = "head"
CLASSIFIER_NAME = "predictions"


def is_head_layer(layer: keras.layers.Layer) -> bool:
    """Head layers are the classifier ``predictions`` and any layer named ``head*``.

    Every family names its new-for-the-dataset layers this way, so transfer learning and
    backbone fine-tuning know what to keep trainable without a per-model list.
    """
    return layer.name == CLASSIFIER_NAME or layer.name.startswith(HEAD_PREFIX)


def head_layers(model: keras.Model) -> list[keras.layers.Layer]:
    return [layer for layer in model.layers if is_head_layer(layer)]


def backbone_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """Every top-level layer with weights that is not part of the head."""
    return [layer for layer in model.layers if layer.weights and not is_head_layer(layer)]
