"""Stops training on a non-finite loss and puts the last good weights back."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np

from callbacks.base import read_variables


class NanGuard(keras.callbacks.Callback):
    """Stops ``fit`` at the first batch whose loss is NaN or infinite and restores the last
    good weights (and optimizer state) kept in memory.

    Snapshots (copies of the weights, and of the optimizer variables with
    ``restore_optimizer``) are taken at the first epoch begin, at every epoch end whose
    monitored values are finite, and every ``snapshot_every_n_batches`` batches if set. The
    trade-off: a snapshot copies the whole model out of the TensorFlow runtime (for Adam, three
    times the weights with ``restore_optimizer``), so taking one every few batches costs time
    and memory, while the default (epoch ends only) can lose up to an epoch of progress.

    The check itself costs one ``math.isfinite`` per monitored key per batch on the python
    floats Keras already put in the logs. Keras reports the epoch's running mean as the batch
    ``loss``, which turns non-finite at the first bad batch.

    The restore happens in the batch hook, before validation and the epoch-end callbacks, so
    validation, checkpoints and backups of that epoch see the good weights. The epoch's
    training metrics stay non-finite (they describe what happened).

    Attributes: ``stop_reason`` (``"non_finite"`` or None), ``stopped_epoch``,
    ``stopped_batch`` (0-based), ``bad_value``, ``snapshot_epoch``. Logs: ``stop_reason`` in the
    batch logs of the bad batch and in that epoch's logs (a string; unless another callback
    already wrote one), plus the number ``nan_guard_batch``.

    Hooks: ``on_train_begin``, ``on_epoch_begin``, ``on_train_batch_end``, ``on_epoch_end``.

    Args:
        monitor: batch-log keys to check.
        snapshot_every_n_batches: also snapshot every N batch-hook calls (N executions with
            ``steps_per_execution`` > 1); None: epoch ends only.
        restore_optimizer: snapshot and restore the optimizer variables too.
        verbose: 1 prints one line when it stops.

    Example::

        NanGuard(snapshot_every_n_batches=200)
        # conf/callbacks/<stack>.yaml:  nan_guard: {_target_: callbacks.nan_guard.NanGuard}
    """

    def __init__(
        self,
        monitor: Sequence[str] = ("loss",),
        snapshot_every_n_batches: int | None = None,
        restore_optimizer: bool = True,
        verbose: int = 1,
    ) -> None:
        super().__init__()
        self.monitor = (monitor,) if isinstance(monitor, str) else tuple(monitor)
        self.snapshot_every_n_batches = (
            int(snapshot_every_n_batches) if snapshot_every_n_batches else None
        )
        self.restore_optimizer = restore_optimizer
        self.verbose = verbose
        self._reset()

    def _reset(self) -> None:
        self.stop_reason: str | None = None
        self.stopped_epoch: int | None = None
        self.stopped_batch: int | None = None
        self.bad_value: float | None = None
        self.snapshot_epoch: int | None = None
        self._weights: list[np.ndarray] | None = None
        self._optimizer_state: list[np.ndarray] | None = None
        self._batches = 0

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._reset()

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._epoch = epoch
        if self._weights is None:
            # Not at on_train_begin: a Backup listed later restores the weights there.
            self._snapshot(epoch)

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        if logs is None or self.stop_reason is not None:
            return
        for key in self.monitor:
            value = logs.get(key)
            if value is not None and not math.isfinite(value):
                self._stop(batch, key, value, logs)
                return
        self._batches += 1
        if self.snapshot_every_n_batches and self._batches % self.snapshot_every_n_batches == 0:
            self._snapshot(self._epoch)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if self.stop_reason is not None:
            if logs is not None and self.stopped_epoch == epoch:
                logs.setdefault("stop_reason", self.stop_reason)
                logs["nan_guard_batch"] = self.stopped_batch
            return
        values = [(logs or {}).get(key) for key in self.monitor]
        if all(v is None or math.isfinite(v) for v in values):
            self._snapshot(epoch)

    def _snapshot(self, epoch: int) -> None:
        self._weights = read_variables(self.model.weights)
        optimizer = self.model.optimizer
        if self.restore_optimizer and optimizer is not None:
            if not optimizer.built:
                # Slots are created lazily at the first step; create them now so that the
                # snapshot holds the whole state.
                optimizer.build(self.model.trainable_variables)
            self._optimizer_state = read_variables(optimizer.variables)
        self.snapshot_epoch = epoch

    def _stop(self, batch: int, key: str, value: float, logs: dict[str, Any]) -> None:
        self.model.stop_training = True
        self.stop_reason = "non_finite"
        self.stopped_epoch, self.stopped_batch, self.bad_value = self._epoch, batch, value
        logs["stop_reason"] = self.stop_reason
        restored = ""
        if self._weights is not None:
            for variable, value in zip(self.model.weights, self._weights, strict=True):
                variable.assign(value)
            self._restore_optimizer()
            restored = f"; weights restored from epoch {self.snapshot_epoch + 1}"
        if self.verbose:
            print(
                f"NanGuard: {key} = {value} at epoch {self._epoch + 1}, batch {batch}; "
                f"training stopped{restored}"
            )

    def _restore_optimizer(self) -> None:
        optimizer = self.model.optimizer
        state = self._optimizer_state
        if not self.restore_optimizer or optimizer is None or state is None:
            return
        for variable, value in zip(optimizer.variables, state, strict=True):
            variable.assign(value)
