"""Keras's early stopping plus thresholds, a non-finite check and a stated reason."""

from __future__ import annotations

import math
from typing import Any

import keras
from keras import ops

STOP_REASONS = ("patience", "threshold", "divergence", "non_finite")


class EarlyStopping(keras.callbacks.EarlyStopping):
    """Stops training when the monitored value stops improving, reaches a goal, diverges or
    is not finite, and says why.

    It keeps Keras's options and their meaning (``monitor``, ``mode``, ``min_delta``,
    ``patience``, ``baseline``, ``restore_best_weights``, ``start_from_epoch``; ``mode="auto"``
    uses the metric's direction) and adds Lightning's ``EarlyStopping`` checks, made at every
    epoch end in this order:

    1. ``check_finite``: the value is NaN or infinite -> ``"non_finite"`` (checked during the
       ``start_from_epoch`` warm-up too: a NaN is never a warm-up effect);
    2. ``stopping_threshold``: the value is at least as good as it -> ``"threshold"``;
    3. ``divergence_threshold``: the value is worse than it -> ``"divergence"``;
    4. no improvement by more than ``min_delta`` for ``patience`` epochs -> ``"patience"``.

    Attributes (reset at ``on_train_begin``): ``best_value``, ``best_epoch`` (0-based, as
    Keras's ``epoch`` argument; None before the first monitored epoch), ``stopped_epoch``
    (0-based, None when it did not stop), ``stop_reason`` (one of :data:`STOP_REASONS` or
    None), ``wait``.

    Epoch logs: ``best_epoch`` and ``best_<monitor>`` (numbers) every monitored epoch, and
    ``stop_reason`` (a string) at the epoch where it stops, unless a callback before it already
    wrote one; loggers must skip strings. With ``restore_best_weights`` the best epoch's
    weights are put back at ``on_train_end``, also after a ``non_finite`` or ``divergence``
    stop. ``on_train_end``'s logs are the trainer's own copy, without the keys added here.

    Resume (``callbacks.backup.Backup``): ``wait``, the best value and epoch are restored; the
    best weights live in memory only, so after a resume ``restore_best_weights`` can only put
    back weights from epochs run since (the ``Checkpoint`` best file has the older ones).

    Keras calls ``on_epoch_end`` on callbacks in list order: put it after the loggers that
    write the monitored key (and after callbacks that script it in tests).

    Hooks: ``on_train_begin``, ``on_epoch_end``, ``on_train_end``.

    Args:
        monitor, min_delta, patience, verbose, mode, baseline, restore_best_weights,
        start_from_epoch: as in ``keras.callbacks.EarlyStopping``; ``verbose`` 1 (default)
            prints one line when it stops.
        stopping_threshold: stop as soon as the value is this good or better.
        divergence_threshold: stop as soon as the value is worse than this.
        check_finite: stop when the value is NaN or infinite.

    Example::

        EarlyStopping(monitor="val_loss", patience=5, divergence_threshold=10.0,
                      restore_best_weights=True)
        # conf/callbacks/<stack>.yaml:
        #   early_stopping: {_target_: callbacks.early_stopping.EarlyStopping, patience: 5}
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        min_delta: float = 0.0,
        patience: int = 0,
        verbose: int = 1,
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
        self._reset()

    def _reset(self) -> None:
        self.wait = 0
        self.best = None
        self.best_weights = None
        self.best_epoch: int | None = None
        self.stopped_epoch: int | None = None
        self.stop_reason: str | None = None
        self._best_weights_lost = False

    @property
    def best_value(self) -> float | None:
        return self.best

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._reset()

    def _lower_is_better(self) -> bool:
        if self.monitor_op is None:
            self._set_monitor_op()
        return self.monitor_op is ops.less

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = logs if logs is not None else {}
        current = self.get_monitor_value(logs)
        if current is None:
            return
        current = float(current)
        if self.check_finite and not math.isfinite(current):
            self._stop(epoch, "non_finite", f"{self.monitor} = {current}", logs)
            return
        if epoch < self.start_from_epoch:
            return
        lower = self._lower_is_better()
        reason = self._threshold_reason(current, lower)
        if self.restore_best_weights and self.best_weights is None and not self._best_weights_lost:
            self.best_weights = self.model.get_weights()
            self.best_epoch = epoch
        self.wait += 1
        improved = math.isfinite(current) and bool(self._is_improvement(current, self.best))
        if improved:
            self.best = current
            self.best_epoch = epoch
            self._best_weights_lost = False
            if self.restore_best_weights:
                self.best_weights = self.model.get_weights()
            # As in Keras: only beating the baseline as well restarts the patience count.
            if self.baseline is None or self._is_improvement(current, self.baseline):
                self.wait = 0
        self._write_best(logs)
        if reason is not None:
            self._stop(epoch, *reason, logs)
        elif not improved and self.wait >= self.patience:
            detail = f"no improvement for {self.wait} epochs"
            self._stop(epoch, "patience", detail, logs)

    def _threshold_reason(self, current: float, lower: bool) -> tuple[str, str] | None:
        goal, limit = self.stopping_threshold, self.divergence_threshold
        if goal is not None and (current <= goal if lower else current >= goal):
            return "threshold", f"{self.monitor} = {current:.6g} reached {goal}"
        if limit is not None and (current > limit if lower else current < limit):
            return "divergence", f"{self.monitor} = {current:.6g} is past {limit}"
        return None

    def _write_best(self, logs: dict[str, Any]) -> None:
        if self.best is not None:
            logs[f"best_{self.monitor}"] = float(self.best)
            logs["best_epoch"] = self.best_epoch

    def _stop(self, epoch: int, reason: str, detail: str, logs: dict[str, Any]) -> None:
        self.model.stop_training = True
        self.stopped_epoch = epoch
        self.stop_reason = reason
        # An earlier callback's reason (NanGuard's) wins: it acted first.
        logs.setdefault("stop_reason", reason)
        self._write_best(logs)
        if self.verbose > 0:
            best = (
                f"; best {self.monitor} {self.best:.6g} at epoch {self.best_epoch + 1}"
                if self.best is not None and self.best_epoch is not None
                else ""
            )
            print(f"EarlyStopping: stopped at epoch {epoch + 1} ({reason}: {detail}){best}")

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        if self.restore_best_weights and self.best_weights is not None:
            if self.verbose > 0:
                print(f"EarlyStopping: restoring the weights of epoch {self.best_epoch + 1}")
            self.model.set_weights(self.best_weights)
        elif self.restore_best_weights and self._best_weights_lost and self.verbose > 0:
            print(
                "EarlyStopping: the best weights predate the resume and are not in memory; "
                "the model keeps its last weights"
            )

    # -- resume support (callbacks.backup.Backup) ---------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {"wait": self.wait, "best": self.best, "best_epoch": self.best_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.wait = int(state.get("wait", 0))
        self.best = state.get("best")
        self.best_epoch = state.get("best_epoch")
        # The best weights live in memory only; after a resume they are those of the first
        # epoch that improves on the restored best (Checkpoint keeps the older best on disk).
        self.best_weights = None
        self._best_weights_lost = self.best is not None
