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

from trainkit.errors import DataNotFoundError

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
    if len(class_names) < 2:
        raise DataNotFoundError(
            f"data folder {folder} has {len(class_names)} class subfolder(s) with images "
            f"({', '.join(sorted(IMAGE_SUFFIXES))}); it needs at least 2"
        )
    return np.array(paths), np.array(labels, dtype=np.int32), class_names
