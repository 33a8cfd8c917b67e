"""CLIP's attention pooling: the math, the positional embedding at other sizes, the encoders."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from tests.models.conftest import images
from trainkit.models import build_model
from trainkit.models.clip_resnet import AttentionPool2d, resize_positional_embedding
from trainkit.models.heads import classifier

CHANNELS, HEADS, OUTPUT, GRID = 64, 4, 24, 7


def pool_layer(grid_shape=(GRID, GRID)) -> AttentionPool2d:
    layer = AttentionPool2d(HEADS, OUTPUT, native_grid=GRID)
    layer.build((None, *grid_shape, CHANNELS))
    return layer


def reference(layer: AttentionPool2d, x: np.ndarray, embedding: np.ndarray) -> np.ndarray:
    """OpenAI's AttentionPool2d in NumPy: every token attends, token 0 is the result."""
    batch, height, width, channels = x.shape
    head_dim = channels // HEADS
    tokens = x.reshape(batch, height * width, channels)
    tokens = np.concatenate([tokens.mean(axis=1, keepdims=True), tokens], axis=1) + embedding

    def project(dense, values):
        return values @ dense.kernel.numpy() + dense.bias.numpy()

    def heads(values):
        return values.reshape(batch, -1, HEADS, head_dim).transpose(0, 2, 1, 3)

    q = heads(project(layer.q_proj, tokens)) * head_dim**-0.5
    k, v = heads(project(layer.k_proj, tokens)), heads(project(layer.v_proj, tokens))
    logits = q @ k.transpose(0, 1, 3, 2)
    weights = np.exp(logits - logits.max(axis=-1, keepdims=True))
    weights /= weights.sum(axis=-1, keepdims=True)
    out = (weights @ v).transpose(0, 2, 1, 3).reshape(batch, -1, channels)
    return project(layer.c_proj, out)[:, 0]


def test_attention_pool_at_the_native_grid_matches_clip():
    layer = pool_layer()
    x = np.random.default_rng(0).normal(size=(2, GRID, GRID, CHANNELS)).astype("float32")
    out = np.asarray(layer(x))
    assert out.shape == (2, OUTPUT)
    embedding = layer.positional_embedding.numpy()
    np.testing.assert_allclose(out, reference(layer, x, embedding), rtol=1e-4, atol=1e-5)


def test_interpolating_to_the_native_grid_changes_nothing():
    layer = pool_layer()
    embedding = layer.positional_embedding.numpy()
    resized = np.asarray(resize_positional_embedding(embedding, GRID, GRID, GRID, "bicubic"))
    np.testing.assert_allclose(resized, embedding, atol=1e-6)
    # The layer skips the resize at the native grid: the output is the resized one's.
    x = np.random.default_rng(1).normal(size=(2, GRID, GRID, CHANNELS)).astype("float32")
    np.testing.assert_allclose(
        np.asarray(layer(x)), reference(layer, x, resized), rtol=1e-4, atol=1e-5
    )


@pytest.mark.parametrize(("height", "width"), [(3, 3), (2, 5), (10, 10), (1, 1)])
def test_other_grids_use_the_resized_embedding(height, width):
    layer = pool_layer()
    embedding = layer.positional_embedding_for(height, width)
    assert tuple(embedding.shape) == (height * width + 1, CHANNELS)
    np.testing.assert_array_equal(embedding[0], layer.positional_embedding.numpy()[0])
    x = np.random.default_rng(2).normal(size=(2, height, width, CHANNELS)).astype("float32")
    out = np.asarray(layer(x))
    assert out.shape == (2, OUTPUT)
    np.testing.assert_allclose(
        out, reference(layer, x, np.asarray(embedding)), rtol=1e-4, atol=1e-5
    )


@pytest.mark.slow
@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"])
def test_attention_pool_trains_in_a_compiled_function(policy):
    keras.mixed_precision.set_global_policy(policy)
    inputs = keras.Input((5, 4, CHANNELS))
    features = AttentionPool2d(HEADS, OUTPUT, native_grid=GRID, name="attnpool")(inputs)
    model = keras.Model(inputs, classifier(features, 3))
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    x = np.random.default_rng(3).normal(size=(4, 5, 4, CHANNELS)).astype("float32")
    history = model.fit(x, np.array([0, 1, 2, 0]), epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert model.predict(x, verbose=0).dtype == np.float32


@pytest.mark.parametrize(
    ("size", "grid"), [(224, (7, 7)), (96, (3, 3)), ((64, 128), (2, 4)), (31, (1, 1))]
)
def test_clip_resnet50_pools_the_final_grid(size, grid):
    model = build_model("clip_resnet50", 5, input_shape=size)
    pool = model.get_layer("attnpool")
    assert tuple(pool.input.shape[1:3]) == grid
    assert pool.input.shape[-1] == 2048 and pool.output.shape[-1] == 1024
    # The weights do not depend on the input size: a 7x7 (+1) x 2048 positional embedding.
    assert tuple(pool.positional_embedding.shape) == (50, 2048)
    if size != 224:
        assert model(images(size, n=1)).shape == (1, 5)
