"""User callbacks for job-level tests: they live outside trainkit, as a user's would."""

from __future__ import annotations

from typing import Any

import keras


class ScriptedEpochKey(keras.callbacks.Callback):
    """Writes ``values[epoch]`` under ``key`` into each epoch's logs (placed last in a stack)."""

    def __init__(self, key: str, values: list[float]) -> None:
        super().__init__()
        self.key = key
        self.values = list(values)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if logs is not None:
            logs[self.key] = float(self.values[epoch])


class FailAtEpochEnd(keras.callbacks.Callback):
    """Raises in ``on_epoch_end`` of ``epoch``: a bug in a user's callback."""

    def __init__(self, epoch: int = 0) -> None:
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if epoch == self.epoch:
            raise RuntimeError(f"user callback failed at epoch {epoch}")
