"""Finding keras.applications' ImageNet weight files without touching the network.

Keras downloads ``weights="imagenet"`` files into ``$KERAS_HOME/models`` (``~/.keras/models`` by
default) on first use. Offline that download hangs, then fails with a long trace, so trainkit
looks in the cache first and, when the file is missing, raises a one-line
:class:`~trainkit.errors.WeightsNotAvailableError` naming the file, its URL and where to put it.
The download is only attempted when asked for (``model.options.download_weights=true``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import keras

from trainkit.errors import WeightsNotAvailableError
from trainkit.models.weights import one_line

BASE_URL = "https://storage.googleapis.com/tensorflow/keras-applications/"


@dataclass(frozen=True)
class WeightsFile:
    """One keras.applications weight file: its cache name, URL and md5 (when Keras has one)."""

    name: str
    origin: str
    md5: str | None = None


def keras_cache_dir() -> Path:
    """Where ``keras.utils.get_file`` keeps model files.

    ``KERAS_HOME`` is read now rather than at import (Keras reads it once), so a test or a job
    that points it elsewhere is honoured.
    """
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(home).expanduser() / "models"


def cached_file(file: WeightsFile) -> Path | None:
    folders = [keras_cache_dir()]
    if not os.access(folders[0].parent, os.W_OK):
        folders.append(Path("/tmp/.keras/models"))  # where Keras falls back to, then
    for folder in folders:
        candidate = folder / file.name
        if candidate.is_file() and candidate.stat().st_size > 0:
            return candidate
    return None


def fetch(model_name: str, file: WeightsFile, download: bool = False) -> Path:
    """The local path of ``file``; download it only when ``download`` is true."""
    found = cached_file(file)
    if found is not None:
        return found
    target = keras_cache_dir() / file.name
    if not download:
        raise WeightsNotAvailableError(
            f"ImageNet weights for '{model_name}' are not in the Keras cache: put {file.name} "
            f"(from {file.origin}) at {target}, or set model.options.download_weights=true to "
            "let Keras download it"
        )
    try:
        path = keras.utils.get_file(
            file.name,
            file.origin,
            cache_subdir="models",
            file_hash=file.md5,
            cache_dir=str(target.parent.parent),
        )
    except Exception as exc:  # noqa: BLE001 - network errors come in many types
        raise WeightsNotAvailableError(
            f"cannot download {file.origin} to {target}: {one_line(exc, 160)}"
        ) from None
    return Path(path)
