"""Classifying image files with a trained model: top-k classes per image, as rows and a CSV.

``run_predict_task`` is what ``python run.py task=predict checkpoint=PATH inputs=FILE_OR_DIR``
runs: it loads a ``.keras`` checkpoint, finds the run's ``class_names.json``, classifies one
image or every image under a folder, prints a table and writes a CSV with one row per image and
rank. Images are read at the model's input size as RGB floats in [0, 255]: every trainkit model
preprocesses its input itself.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np

from trainkit.errors import DataNotFoundError, WeightsNotAvailableError
from trainkit.models.imagenet import WeightsFile, cached_file
from trainkit.models.weights import one_line

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".bmp", ".gif", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")
CSV_FIELDS = ("image", "rank", "class_index", "class_name", "probability")
CLASS_NAMES_FILE = "class_names.json"
# The file keras.applications.imagenet_utils.decode_predictions downloads into the Keras cache.
IMAGENET_INDEX = WeightsFile(
    "imagenet_class_index.json",
    "https://storage.googleapis.com/download.tensorflow.org/data/imagenet_class_index.json",
)
IMAGENET_CLASSES = 1000


def list_images(inputs: str | os.PathLike) -> list[Path]:
    """``inputs`` itself, or the images under the folder ``inputs`` (recursively, sorted)."""
    path = Path(inputs).expanduser()
    if path.is_file():
        return [path]
    if path.is_dir():
        found = sorted(
            p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
        )
        if not found:
            raise DataNotFoundError(
                f"no images ({', '.join(IMAGE_SUFFIXES)}) under {path}: pass an image file or "
                "a folder that holds images"
            )
        return found
    raise DataNotFoundError(f"inputs={path}: no such image file or folder")


def load_images(paths: Sequence[Path], size: tuple[int, int]) -> np.ndarray:
    """The images resized to ``size`` (height, width), as RGB float32 in [0, 255]."""
    batch = np.empty((len(paths), *size, 3), dtype=np.float32)
    for index, path in enumerate(paths):
        try:
            image = keras.utils.load_img(path, color_mode="rgb", target_size=size)
        except Exception as exc:  # noqa: BLE001 - PIL raises several kinds for bad files
            raise DataNotFoundError(f"cannot read image {path}: {exc.__class__.__name__}") from None
        batch[index] = keras.utils.img_to_array(image, dtype="float32")
    return batch


def imagenet_class_names() -> list[str] | None:
    """The 1000 ImageNet class names when ``imagenet_class_index.json`` is in the Keras cache.

    ``decode_predictions`` reads this file but downloads it when it is missing, which offline
    hangs then fails; reading it here, only when present, never touches the network.
    """
    path = cached_file(IMAGENET_INDEX)
    if path is None:
        return None
    try:
        index = json.loads(path.read_text())
        return [str(index[str(i)][1]) for i in range(IMAGENET_CLASSES)]
    except (OSError, ValueError, KeyError, IndexError):
        return None


def resolve_class_names(class_names: Sequence[str] | None, num_classes: int) -> list[str]:
    """Names for the ``num_classes`` outputs: the given ones, ImageNet's, or ``class_<i>``."""
    if class_names is not None:
        if len(class_names) == num_classes:
            return [str(name) for name in class_names]
        log.warning(
            "%d class names for a %d-class model: using class_<i> names instead",
            len(class_names),
            num_classes,
        )
    elif num_classes == IMAGENET_CLASSES:
        names = imagenet_class_names()
        if names is not None:
            return names
        log.info("imagenet_class_index.json is not in the Keras cache: using class_<i> names")
    return [f"class_{i}" for i in range(num_classes)]


def model_image_size(model: keras.Model) -> tuple[int, int]:
    height, width = model.input_shape[1:3]
    if height is None or width is None:
        raise ValueError(f"model '{model.name}' has no fixed input size: pass image_size")
    return int(height), int(width)


def predict_images(
    model: keras.Model,
    inputs: str | os.PathLike,
    class_names: Sequence[str] | None = None,
    top_k: int = 5,
    image_size: int | tuple[int, int] | None = None,
    batch_size: int = 32,
) -> list[dict[str, Any]]:
    """Classify the image ``inputs`` (or every image under the folder ``inputs``).

    Args:
        model: a trainkit model (RGB [0, 255] in, softmax out).
        inputs: an image file or a folder of images.
        class_names: names of the model's classes, index = output; None for ImageNet names on a
            1000-class head (when the Keras cache has them) or ``class_<i>``.
        top_k: how many classes per image (at most the number of classes).
        image_size: the size to load images at; None for the model's input size.
        batch_size: images per forward pass.

    Returns:
        One dict per image: ``{"image": path, "predictions": [{"rank", "class_index",
        "class_name", "probability"}, ...]}`` with the ``top_k`` classes, most probable first.
    """
    paths = list_images(inputs)
    if image_size is None:
        size = model_image_size(model)
    elif isinstance(image_size, int):
        size = (image_size, image_size)
    else:
        size = (int(image_size[0]), int(image_size[1]))
    rows: list[dict[str, Any]] = []
    names: list[str] | None = None
    for start in range(0, len(paths), batch_size):
        chunk = paths[start : start + batch_size]
        probabilities = np.asarray(model.predict_on_batch(load_images(chunk, size)))
        if names is None:
            names = resolve_class_names(class_names, probabilities.shape[-1])
        k = max(1, min(top_k, probabilities.shape[-1]))
        for path, probs in zip(chunk, probabilities, strict=True):
            order = np.argsort(-probs, kind="stable")[:k]
            rows.append(
                {
                    "image": str(path),
                    "predictions": [
                        {
                            "rank": rank,
                            "class_index": int(index),
                            "class_name": names[index],
                            "probability": float(probs[index]),
                        }
                        for rank, index in enumerate(order, start=1)
                    ],
                }
            )
    return rows


def write_predictions_csv(rows: Sequence[dict[str, Any]], path: str | os.PathLike) -> Path:
    """Write ``rows`` (from :func:`predict_images`) with one line per image and rank."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_FIELDS)
        writer.writeheader()
        for row in rows:
            for prediction in row["predictions"]:
                writer.writerow({"image": row["image"], **prediction})
    return target


def find_class_names(checkpoint: Path, levels: int = 2) -> list[str] | None:
    """The list in ``class_names.json`` next to ``checkpoint`` or up to ``levels`` folders up."""
    folder = checkpoint.resolve().parent
    for candidate in [folder, *folder.parents][: levels + 1]:
        path = candidate / CLASS_NAMES_FILE
        if path.is_file():
            try:
                names = json.loads(path.read_text())
            except ValueError:
                log.warning("%s is not valid JSON: ignored", path)
                return None
            if isinstance(names, list):
                return [str(name) for name in names]
            log.warning("%s does not hold a JSON list: ignored", path)
            return None
    return None


def load_checkpoint(checkpoint: str | os.PathLike) -> keras.Model:
    path = Path(checkpoint).expanduser()
    if not path.is_file():
        raise WeightsNotAvailableError(f"checkpoint={path}: no such file (a .keras file of a run)")
    if not path.name.endswith(".keras"):
        raise WeightsNotAvailableError(
            f"checkpoint={path}: expected a .keras file (as a run's checkpoints/*.keras)"
        )
    # Custom layers and models (GoogLeNet, CLIP's attention pool) register on import.
    import trainkit.models  # noqa: F401

    try:
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as exc:  # noqa: BLE001 - zip, h5 and deserialisation errors alike
        raise WeightsNotAvailableError(
            f"checkpoint={path}: cannot load it ({one_line(exc)}): pass a .keras checkpoint "
            "of a trainkit run"
        ) from exc


def print_predictions(rows: Sequence[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Top-k predictions")
    for column, justify in (
        ("image", "left"),
        ("rank", "right"),
        ("class", "left"),
        ("probability", "right"),
    ):
        table.add_column(column, justify=justify)
    for row in rows:
        for prediction in row["predictions"]:
            first = prediction["rank"] == 1
            table.add_row(
                Path(row["image"]).name if first else "",
                str(prediction["rank"]),
                prediction["class_name"],
                f"{prediction['probability']:.4f}",
                end_section=prediction is row["predictions"][-1],
            )
    Console().print(table)


def run_predict_task(
    checkpoint: str | os.PathLike,
    inputs: str | os.PathLike,
    output_csv: str | os.PathLike,
    top_k: int = 5,
) -> list[dict[str, Any]]:
    """Load ``checkpoint``, classify ``inputs``, print the top-k table, write ``output_csv``."""
    list_images(inputs)  # fail on a bad path before loading a large model
    model = load_checkpoint(checkpoint)
    class_names = find_class_names(Path(checkpoint).expanduser())
    rows = predict_images(model, inputs, class_names, top_k)
    print_predictions(rows)
    write_predictions_csv(rows, output_csv)
    return rows
