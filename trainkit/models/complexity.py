"""Counting a model's multiply-accumulates (MACs) from its layers' output shapes.

Only the layers that dominate the cost are counted: Conv2D, DepthwiseConv2D, Dense and CLIP's
attention pooling (its projections and its two attention matmuls). One MAC per weight per
output position; biases, normalisation, activations, pooling and additions are ignored, as in
the usual "GMACs" tables. GoogLeNet's training-only auxiliary heads are not counted.
"""

from __future__ import annotations

import math

import keras

from trainkit.models.clip_resnet import AttentionPool2d
from trainkit.models.weights import all_layers


def layer_macs(layer: keras.layers.Layer) -> int:
    """MACs of one call of ``layer`` for one image (0 for the layers that are not counted)."""
    if isinstance(layer, AttentionPool2d):
        return _attention_pool_macs(layer)
    if isinstance(layer, keras.layers.Conv2D | keras.layers.DepthwiseConv2D | keras.layers.Dense):
        # Kernel size x output positions: (kh, kw, in/groups, out), (kh, kw, in, multiplier)
        # and (in, out) all hold one weight per MAC of one output position.
        positions = math.prod(int(d) for d in layer.output.shape[1:-1])
        return positions * math.prod(int(d) for d in layer.kernel.shape)
    return 0


def _attention_pool_macs(layer: AttentionPool2d) -> int:
    _, height, width, channels = layer.input.shape
    tokens = height * width + 1
    projections = (1 + 2 * tokens) * channels * channels  # q for the mean token; k, v for all
    attention = 2 * tokens * channels  # q.k^T and weights.v over every head
    return projections + attention + channels * layer.output_dim


def count_macs(model: keras.Model) -> int:
    """MACs of one forward pass of one image through ``model``'s inference graph."""
    inference = getattr(model, "inference_model", None)
    if callable(inference):
        model = inference()
    return sum(layer_macs(layer) for layer in all_layers(model))
