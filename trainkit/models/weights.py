"""Loading weights from an earlier run into a freshly built model.

``model.weights=PATH`` accepts a ``.weights.h5`` file (``model.save_weights``) or a ``.keras``
file (``model.save``). A ``.weights.h5`` file has no architecture: it loads into the same model
(same family, input size and number of classes), which is what resuming needs. A ``.keras`` file
is loaded as a model and its layers are copied by name; a head layer (``predictions``,
``head*``) whose shapes differ, because the number of classes changed, keeps its fresh
initialisation, so the same file serves transfer learning. Any other mismatch is an error: the
file is from another architecture.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

import keras

from trainkit.config.files import check_weights_file
from trainkit.errors import WeightsNotAvailableError
from trainkit.models.registry import is_head_layer


def one_line(exc: BaseException, limit: int = 300) -> str:
    """``exc`` as a single line of at most ``limit`` characters (Keras errors span many)."""
    text = " ".join(f"{exc.__class__.__name__}: {exc}".split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def load_weights_into(
    model: keras.Model, weights: str | os.PathLike, head_layers: Iterable[str] = ()
) -> list[str]:
    """Copy the weights of ``weights`` into ``model``; return the names of the layers loaded.

    Args:
        model: the freshly built target.
        weights: a ``.keras`` or ``.weights.h5`` path.
        head_layers: extra names of layers that may differ in shape, besides the head layers
            recognised by :func:`trainkit.models.registry.is_head_layer`.
    """
    if str(weights) == "imagenet":
        raise WeightsNotAvailableError(
            f"model '{model.name}' has no ImageNet weights: use model.weights=null or the path "
            "of a .keras / .weights.h5 file"
        )
    path = check_weights_file(weights, key="model.weights")
    if path.name.endswith(".h5"):
        return _load_h5(model, path)
    if path.name.endswith(".keras"):
        return _copy_by_name(_load_keras(path), model, path, set(head_layers))
    raise WeightsNotAvailableError(
        f"model.weights={path}: expected a .keras or .weights.h5 file, or 'imagenet'"
    )


def _load_h5(model: keras.Model, path: Path) -> list[str]:
    try:
        model.load_weights(path)
    except Exception as exc:  # noqa: BLE001 - h5 errors are many and opaque
        raise WeightsNotAvailableError(
            f"model.weights={path}: cannot load it into model '{model.name}' "
            f"({one_line(exc, 160)}): a .weights.h5 file only fits the same model, input size "
            "and number of classes; for transfer, pass the run's .keras checkpoint instead"
        ) from None
    return [layer.name for layer in all_layers(model) if layer.weights]


def _load_keras(path: Path) -> keras.Model:
    # safe_mode: a file from elsewhere must not run code (Lambda layers) when it loads.
    try:
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as exc:  # noqa: BLE001 - zip, h5 and deserialisation errors alike
        raise WeightsNotAvailableError(
            f"model.weights={path}: cannot load it ({one_line(exc)}): pass a .keras file of a "
            "trainkit model"
        ) from exc


def _copy_by_name(
    source: keras.Model, model: keras.Model, path: Path, head_names: set[str]
) -> list[str]:
    by_name = {layer.name: layer for layer in all_layers(source)}
    loaded, mismatched = [], []
    for layer in all_layers(model):
        if not layer.weights or layer.name not in by_name:
            continue
        values = by_name[layer.name].get_weights()
        if [v.shape for v in values] != [tuple(w.shape) for w in layer.weights]:
            mismatched.append(layer)
            continue
        layer.set_weights(values)
        loaded.append(layer.name)
    unexpected = [
        layer.name
        for layer in mismatched
        if layer.name not in head_names and not is_head_layer(layer)
    ]
    if not loaded or unexpected:
        detail = f" (layers with other shapes: {', '.join(unexpected[:5])})" if unexpected else ""
        raise WeightsNotAvailableError(
            f"model.weights={path}: the weights do not fit model '{model.name}'{detail}: they "
            "come from another architecture or input configuration"
        )
    return loaded


def all_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """Leaf layers, descending into nested models (keras.applications backbones)."""
    out: list[keras.layers.Layer] = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            out.extend(all_layers(layer))
        else:
            out.append(layer)
    return out


def save_and_reload(model: keras.Model) -> keras.Model:
    """Round-trip ``model`` through a .keras file (used by tests and the export path)."""
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "model.keras"
        model.save(target)
        return keras.saving.load_model(target)
