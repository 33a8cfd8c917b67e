"""Files a config names (weights, checkpoints), checked without TensorFlow.

These checks run with the rest of :func:`trainkit.config.schema.validate`, before TensorFlow is
imported, so a wrong path ends the job in about two seconds.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

from trainkit.errors import WeightsNotAvailableError

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def check_weights_file(weights: str | os.PathLike, key: str = "model.weights") -> Path:
    """Check, without TensorFlow, that ``weights`` is an existing ``.keras`` model file or
    ``.weights.h5`` file: a zip holding ``config.json``, or an HDF5 file. Raises
    :class:`WeightsNotAvailableError` naming ``key``; returns the path.

    A ``.keras`` file that is no model (another zip, a text file) would otherwise reach Keras,
    which reports it as "File not found" although it exists.
    """
    path = Path(weights).expanduser()
    if not path.is_file():
        what = "a .keras file of a run" if key == "checkpoint" else "a .keras / .weights.h5 file"
        raise WeightsNotAvailableError(f"{key}={path}: file not found ({what})")
    if path.name.endswith(".keras"):
        try:
            with zipfile.ZipFile(path) as archive:
                names = set(archive.namelist())
        except (zipfile.BadZipFile, OSError) as exc:
            raise WeightsNotAvailableError(
                f"{key}={path}: not a Keras model file ({exc}): pass a .keras file written by "
                "model.save (a run's checkpoints/*.keras)"
            ) from exc
        if "config.json" not in names:
            raise WeightsNotAvailableError(
                f"{key}={path}: not a Keras model file (a zip without config.json): pass a "
                ".keras file written by model.save (a run's checkpoints/*.keras)"
            )
        return path
    if path.name.endswith(".h5"):
        with path.open("rb") as handle:
            if handle.read(8) != HDF5_SIGNATURE:
                raise WeightsNotAvailableError(
                    f"{key}={path}: not an HDF5 weights file: pass a .weights.h5 file written "
                    "by model.save_weights"
                )
        return path
    raise WeightsNotAvailableError(f"{key}={path}: expected a .keras or .weights.h5 file")
