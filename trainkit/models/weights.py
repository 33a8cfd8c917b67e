"""Loading weights from an earlier run into a freshly built model.

``model.weights=PATH`` accepts a ``.weights.h5`` file (``model.save_weights``) or a ``.keras``
file (``model.save``). Layers are matched by name; a layer whose weight shapes differ (the
classification head when the number of classes changed) keeps its fresh initialisation, so the
same file serves both resuming and transfer learning. A file that matches no layer at all is an
error: it is from another architecture.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

import keras

from trainkit.errors import WeightsNotAvailableError


def _source_model(path: Path, like: keras.Model) -> keras.Model:
    if path.name.endswith(".keras"):
        return keras.saving.load_model(path, compile=False)
    if path.name.endswith(".h5"):
        # A .weights.h5 file has no architecture: load it into a clone of the target, which
        # works when the file comes from the same architecture and head size.
        clone = keras.models.clone_model(like)
        try:
            clone.load_weights(path)
        except Exception as exc:  # noqa: BLE001 - h5 errors are many and opaque
            raise WeightsNotAvailableError(
                f"cannot load weights from {path}: {exc.__class__.__name__}: {exc}. The file "
                "must come from the same model (and number of classes); for transfer to "
                "another number of classes, pass the run's .keras checkpoint instead"
            ) from None
        return clone
    raise WeightsNotAvailableError(
        f"model.weights={path}: expected a .keras or .weights.h5 file, or 'imagenet'"
    )


def load_weights_into(
    model: keras.Model, weights: str | os.PathLike, head_layers: Iterable[str] = ()
) -> list[str]:
    """Copy the weights of ``weights`` into ``model`` layer by layer; return the layers loaded.

    Args:
        model: the freshly built target.
        weights: a ``.keras`` or ``.weights.h5`` path.
        head_layers: names of layers that may legitimately differ in shape (new head).
    """
    path = Path(weights).expanduser()
    if str(weights) == "imagenet":
        raise WeightsNotAvailableError(
            f"model '{model.name}' has no ImageNet weights in keras.applications: use "
            "model.weights=null or the path of a .keras / .weights.h5 file"
        )
    if not path.exists():
        raise WeightsNotAvailableError(
            f"weights file not found: {path} (model.weights must be 'imagenet' or an existing "
            ".keras / .weights.h5 file)"
        )
    source = _source_model(path, model)
    by_name = {layer.name: layer for layer in _all_layers(source)}
    loaded, mismatched = [], []
    for layer in _all_layers(model):
        if not layer.weights or layer.name not in by_name:
            continue
        src = by_name[layer.name]
        src_w = src.get_weights()
        if [w.shape for w in src_w] != [tuple(w.shape) for w in layer.weights]:
            mismatched.append(layer.name)
            continue
        layer.set_weights(src_w)
        loaded.append(layer.name)
    unexpected = [n for n in mismatched if n not in set(head_layers)]
    if not loaded or unexpected:
        raise WeightsNotAvailableError(
            f"weights in {path} do not fit model '{model.name}'"
            + (f" (layers with other shapes: {', '.join(unexpected[:5])})" if unexpected else "")
            + ": they come from another architecture or input configuration"
        )
    return loaded


def _all_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """Leaf layers, descending into nested models (keras.applications backbones)."""
    out: list[keras.layers.Layer] = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            out.extend(_all_layers(layer))
        else:
            out.append(layer)
    return out


def save_and_reload(model: keras.Model) -> keras.Model:
    """Round-trip ``model`` through a .keras file (used by tests and the export path)."""
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "model.keras"
        model.save(target)
        return keras.saving.load_model(target)
