"""A user's images on disk: one subfolder per class (the ``image_dataset_from_directory`` layout).

```
DIR/
  cats/  a.jpg b.png ...
  dogs/  c.jpg ...
```
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from trainkit.errors import DataError, DataNotFoundError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif"}


def list_images(root: str | Path | None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``(paths, labels, class_names)`` of the images under ``root``, classes sorted by name."""
    if root is None or str(root) in ("", "???"):
        raise DataNotFoundError(
            "data=folder needs a folder: add data.path=DIR (one subfolder of images per class)"
        )
    folder = Path(str(root)).expanduser()
    if not folder.is_dir():
        raise DataNotFoundError(
            f"data folder not found: {folder} (data.path must be a folder with one subfolder "
            "of images per class)"
        )
    class_dirs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    paths: list[str] = []
    labels: list[int] = []
    class_names: list[str] = []
    for class_dir in class_dirs:
        files = sorted(
            p for p in class_dir.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
        )
        if not files:
            continue
        label = len(class_names)
        class_names.append(class_dir.name)
        paths.extend(str(p) for p in files)
        labels.extend([label] * len(files))
    if not class_names:
        raise DataNotFoundError(
            f"data folder {folder} is empty: data.path needs one subfolder of images "
            f"({', '.join(sorted(IMAGE_SUFFIXES))}) per class, at least 2 classes"
        )
    if len(class_names) < 2:
        raise DataNotFoundError(
            f"data folder {folder} has one class ({class_names[0]}): data.path needs at least 2 "
            f"class subfolders of images ({', '.join(sorted(IMAGE_SUFFIXES))}) to classify"
        )
    check_images(paths)
    return np.array(paths), np.array(labels, dtype=np.int32), class_names


def check_images(paths: list[str]) -> None:
    """Raise :class:`DataError` naming the first file that is not a readable image.

    PIL reads each file's header and checks its structure (``verify``) without decoding the
    pixels, so a folder is checked in about a millisecond per image, before TensorFlow loads;
    without this, a bad file stops training in the middle of an epoch.
    """
    try:
        from PIL import Image
    except ImportError:  # no Pillow: TensorFlow's decoder will say it, later
        return
    for path in paths:
        try:
            with Image.open(path) as image:
                image.verify()
        except Exception as exc:  # noqa: BLE001 - PIL raises many kinds for broken files
            raise DataError(
                f"data.path: {path} is not a readable image ({exc.__class__.__name__}: "
                f"{' '.join(str(exc).split())[:120]}): remove or replace it"
            ) from exc
