"""Keras's early stopping, unchanged, plus thresholds, a non-finite check and a stated reason."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops

from callbacks.base import read_variables, to_numpy

STOP_REASONS = ("patience", "threshold", "divergence", "non_finite")


def is_improvement(callback: Any, monitor_value: Any, reference_value: Any) -> bool:
    """Keras's ``MonitorCallback._is_improvement``; a value of several elements (an F1 score
    per class), for which Keras's comparison is ambiguous and raises, compares by its mean.
    Two Python floats (the usual epoch logs) are compared as Keras's op compares them, in
    float32, with numpy instead of an eager TensorFlow op."""
    if reference_value is None:
        return True
    op = callback.monitor_op
    if (
        type(monitor_value) is float
        and type(reference_value) is float
        and isinstance(callback.min_delta, int | float)
        and (op is ops.less or op is ops.greater)
    ):
        # What Keras's op computes for two Python floats (TensorFlow makes each a float32
        # tensor), without the eager op (40-100 us here, at every epoch end).
        value = np.float32(monitor_value - callback.min_delta)
        reference = np.float32(reference_value)
        return bool(value < reference) if op is ops.less else bool(value > reference)
    if np.size(monitor_value) > 1 or np.size(reference_value) > 1:
        monitor_value = float(np.mean(monitor_value))
        reference_value = float(np.mean(reference_value))
    return bool(callback.monitor_op(monitor_value - callback.min_delta, reference_value))


class EarlyStopping(keras.callbacks.EarlyStopping):
    """``keras.callbacks.EarlyStopping``, with Lightning's extra checks and a stated reason.

    Every Keras option and attribute keeps Keras's meaning, default and type: ``monitor``,
    ``min_delta``, ``patience``, ``verbose``, ``mode`` (``"auto"`` uses the metric's own
    direction), ``baseline``, ``restore_best_weights``, ``start_from_epoch``; ``wait``,
    ``best`` (the monitored value as Keras got it, an array for array-valued metrics),
    ``best_epoch`` (0 until an epoch is monitored), ``best_weights`` (None, or a list of numpy
    arrays: the weights of the best epoch), ``stopped_epoch`` (0 when it did not stop, so ``if
    es.stopped_epoch > 0:`` works as with Keras). The patience logic is Keras 3's
    ``on_epoch_end``, line for line (:meth:`_keras_epoch_end`), so with Keras's options it stops
    at the same epoch and restores the same weights.

    One difference in cost, not in what a reader sees: at an improving epoch Keras copies every
    weight to numpy (``get_weights``: two eager ops and a copy per variable, on the training
    thread, at every improvement); here the weights are read as a snapshot
    (:func:`callbacks.base.read_variables`, one read per variable, the runtime keeping the
    values while later steps write new ones), and turned into numpy arrays when
    ``best_weights`` is read (by ``on_train_end``'s restore, or by you).

    Additions, checked at each epoch end:

    1. ``check_finite``: a NaN or infinite value stops at once -> ``"non_finite"`` (during the
       ``start_from_epoch`` warm-up too: a NaN is never a warm-up effect); Keras would count it
       as an epoch without improvement;
    2. ``stopping_threshold``: the value is at least as good as it -> ``"threshold"``;
    3. ``divergence_threshold``: the value is worse than it -> ``"divergence"``;
    4. Keras's patience -> ``"patience"``.

    ``stop_reason`` (one of :data:`STOP_REASONS`, or None) says which. The thresholds compare a
    scalar; an array-valued metric (``keras.metrics.F1Score(average=None)``, one value per
    class) is compared by its mean for them. Epoch logs: ``best_epoch`` and ``best_<monitor>``
    (scalar metrics) every monitored epoch and ``stop_reason`` (a string) at the epoch where it
    stops, unless an earlier callback wrote one; loggers skip strings.

    Resume (``callbacks.backup.Backup``): ``wait``, ``best`` and ``best_epoch`` are restored;
    the best weights live in memory only, so after a resume ``restore_best_weights`` can only put
    back weights from epochs run since (the ``Checkpoint`` best file has the older ones).

    Keras calls ``on_epoch_end`` on callbacks in list order: put it after the loggers that
    write the monitored key.

    Hooks: ``on_train_begin``, ``on_epoch_end``, ``on_train_end``.

    Args:
        monitor, min_delta, patience, verbose, mode, baseline, restore_best_weights,
        start_from_epoch: as in ``keras.callbacks.EarlyStopping`` (same defaults).
        stopping_threshold: stop as soon as the value is this good or better.
        divergence_threshold: stop as soon as the value is worse than this.
        check_finite: stop when the value is NaN or infinite.

    Example::

        EarlyStopping(monitor="val_loss", patience=5, divergence_threshold=10.0,
                      restore_best_weights=True, verbose=1)
        # conf/callbacks/<stack>.yaml:
        #   early_stopping: {_target_: callbacks.early_stopping.EarlyStopping, patience: 5}
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        min_delta: float = 0,
        patience: int = 0,
        verbose: int = 0,
        mode: str = "auto",
        baseline: float | None = None,
        restore_best_weights: bool = False,
        start_from_epoch: int = 0,
        stopping_threshold: float | None = None,
        divergence_threshold: float | None = None,
        check_finite: bool = True,
    ) -> None:
        super().__init__(
            monitor=monitor,
            min_delta=min_delta,
            patience=patience,
            verbose=verbose,
            mode=mode,
            baseline=baseline,
            restore_best_weights=restore_best_weights,
            start_from_epoch=start_from_epoch,
        )
        self.stopping_threshold = stopping_threshold
        self.divergence_threshold = divergence_threshold
        self.check_finite = check_finite
        self.stop_reason: str | None = None
        self.best_epoch = 0
        self._best_weights_lost = False

    # -- best_weights: a snapshot, numpy when read ------------------------------------------

    @property
    def best_weights(self) -> list[np.ndarray] | None:
        """The best epoch's weights as Keras has them: None, or a list of numpy arrays."""
        snapshot = self.__dict__.get("_best_snapshot")
        if snapshot is not None:
            self._best_numpy = to_numpy(snapshot)
            self._best_snapshot = None
        return self.__dict__.get("_best_numpy")

    @best_weights.setter
    def best_weights(self, value: list[np.ndarray] | None) -> None:
        self._best_snapshot = None
        self._best_numpy = value

    def _snapshot_best(self) -> None:
        self._best_numpy = None
        self._best_snapshot = read_variables(self.model.weights)

    def _has_best_weights(self) -> bool:
        return self._best_snapshot is not None or self._best_numpy is not None

    def _is_improvement(self, monitor_value: Any, reference_value: Any) -> bool:
        return is_improvement(self, monitor_value, reference_value)

    @property
    def best_value(self) -> Any:
        return self.best

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        super().on_train_begin(logs)
        self.stop_reason = None
        self._best_weights_lost = False

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = logs if logs is not None else {}
        current = logs.get(self.monitor)
        if current is not None and self.check_finite and not np.all(np.isfinite(current)):
            self._write_best(logs)
            self._stop(epoch, "non_finite", f"{self.monitor} = {current}", logs)
            return
        stopped_before = self.model.stop_training and self.stopped_epoch == epoch
        self._keras_epoch_end(epoch, logs)
        if current is None or epoch < self.start_from_epoch:
            return
        self._write_best(logs)
        reason = self._threshold_reason(float(np.mean(current)))
        if reason is not None:
            self._stop(epoch, *reason, logs)
        elif self.stopped_epoch == epoch and epoch > 0 and not stopped_before:
            self._stop(epoch, "patience", f"no improvement for {self.wait} epochs", logs)

    def _keras_epoch_end(self, epoch: int, logs: dict[str, Any]) -> None:
        """``keras.callbacks.EarlyStopping.on_epoch_end`` of Keras 3, line for line, with one
        change: ``self.best_weights = self.model.get_weights()`` is ``self._snapshot_best()``
        (the same values, read as a snapshot, numpy when ``best_weights`` is read)."""
        if self.monitor_op is None:
            # Delay setup until the model's metrics are all built
            self._set_monitor_op()

        current = self.get_monitor_value(logs)
        if current is None or epoch < self.start_from_epoch:
            # If no monitor value exists or still in initial warm-up stage.
            return
        if self.restore_best_weights and not self._has_best_weights():
            # If best weights were never set, then the current weights are the best.
            self._snapshot_best()
            self.best_epoch = epoch

        self.wait += 1
        if self._is_improvement(current, self.best):
            self.best = current
            self.best_epoch = epoch
            if self.restore_best_weights:
                self._snapshot_best()
            # Only restart wait if we beat both the baseline and our previous best.
            if self.baseline is None or self._is_improvement(current, self.baseline):
                self.wait = 0
            return

        if self.wait >= self.patience and epoch > 0:
            # Patience has been exceeded: stop training
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def _threshold_reason(self, current: float) -> tuple[str, str] | None:
        goal, limit = self.stopping_threshold, self.divergence_threshold
        if goal is None and limit is None:
            return None
        if self.monitor_op is None:
            self._set_monitor_op()
        lower = self.monitor_op is ops.less
        if goal is not None and (current <= goal if lower else current >= goal):
            return "threshold", f"{self.monitor} = {current:.6g} reached {goal}"
        if limit is not None and (current > limit if lower else current < limit):
            return "divergence", f"{self.monitor} = {current:.6g} is past {limit}"
        return None

    def _write_best(self, logs: dict[str, Any]) -> None:
        if self.best is not None and np.ndim(self.best) == 0:
            logs[f"best_{self.monitor}"] = float(self.best)
            logs["best_epoch"] = self.best_epoch

    def _stop(self, epoch: int, reason: str, detail: str, logs: dict[str, Any]) -> None:
        self.model.stop_training = True
        self.stopped_epoch = epoch
        self.stop_reason = reason
        # An earlier callback's reason (NanGuard's) wins: it acted first.
        logs.setdefault("stop_reason", reason)
        if self.verbose > 0:
            print(f"EarlyStopping: stopped at epoch {epoch + 1} ({reason}: {detail})")

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        lost = self.restore_best_weights and self.best_weights is None and self._best_weights_lost
        if lost and self.verbose > 0:
            print(
                "EarlyStopping: the best weights predate the resume and are not in memory; "
                "the model keeps its last weights"
            )
        super().on_train_end(logs)

    # -- resume support (callbacks.backup.Backup) ---------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        best = None if self.best is None else np.asarray(self.best).tolist()
        return {"wait": self.wait, "best": best, "best_epoch": self.best_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.wait = int(state.get("wait", 0))
        best = state.get("best")
        self.best = None if best is None else (np.asarray(best) if isinstance(best, list) else best)
        self.best_epoch = int(state.get("best_epoch") or 0)
        # The best weights live in memory only; after a resume they are those of the first
        # epoch that improves on the restored best (Checkpoint keeps the older best on disk).
        self.best_weights = None
        self._best_weights_lost = self.best is not None
