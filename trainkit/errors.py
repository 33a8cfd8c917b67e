"""User-facing errors.

Every problem a user can fix (a bad option, a missing file, an unreachable server) is raised
as a :class:`TrainkitError`: the job prints its message on one line, with no traceback, and
exits with status 2. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class TrainkitError(Exception):
    """A problem the user can fix. The message names the problem and the fix."""

    exit_code = 2


class ConfigError(TrainkitError):
    """An option has a value that cannot work (unknown name, wrong type, out of range)."""


class InputTooSmallError(ConfigError):
    """The input image is smaller than the architecture allows."""

    def __init__(self, model: str, size: int, minimum: int) -> None:
        super().__init__(
            f"model '{model}' needs an input of at least {minimum}x{minimum} pixels, got "
            f"{size}x{size}: set data.image_size={minimum} or larger (or null for the native size)"
        )
        self.model = model
        self.size = size
        self.minimum = minimum


class DataNotFoundError(TrainkitError):
    """A data folder or dataset archive is missing."""


class WeightsNotAvailableError(TrainkitError):
    """Pretrained weights cannot be loaded (offline, missing file, incompatible model)."""


class TrackingError(TrainkitError):
    """The MLflow tracking store cannot be reached or refuses the request."""
