"""Step, epoch, test and predict wall times written into the logs every later callback sees."""

from __future__ import annotations

import time
from typing import Any

from callbacks.base import TrainkitCallback


class Timing(TrainkitCallback):
    """Measures wall time and throughput and writes them into ``logs``.

    Keys written (seconds, samples per second):

    * train batch logs: ``step_time`` (time since the previous batch ended, per step, so data
      loading and the other callbacks are included) and ``samples_per_sec``;
    * epoch logs: ``epoch_time`` (whole epoch, validation included), ``train_time``,
      ``val_time`` (only when the epoch validated), ``step_time`` (mean over the epoch) and
      ``samples_per_sec`` (training part only);
    * ``on_test_end`` logs of ``evaluate``: ``test_time``;
    * ``on_predict_end`` logs: ``predict_time``.

    ``samples_per_sec`` needs the batch size (the option, else the run context's); without it
    the key is not written. It counts full batches, so a smaller last batch makes it slightly
    high. Keras passes the same dict to every callback of a hook, so put ``Timing`` before the
    loggers in the stack. The first epoch's times include graph tracing.

    They measure the machine, not the model (``system_keys``): MLflow files them under
    ``system/`` (the run page's System metrics tab); TensorBoard and ``events.jsonl`` keep the
    names above.

    A batch hook costs two clock reads, two divisions and two dict stores.

    Hooks: ``on_train_begin``, ``on_epoch_{begin,end}``, ``on_train_batch_end``,
    ``on_test_{begin,end}``, ``on_predict_{begin,end}``.

    Args:
        batch_size: the training batch size; defaults to the run context's ``batch_size``.

    Example::

        model.fit(train, epochs=3, callbacks=[Timing(batch_size=32), MyLogger()])
        # conf/callbacks/<stack>.yaml:  timing: {_target_: callbacks.timing.Timing}
    """

    uses_clock = True  # steps per hook call come from the stack's clock
    system_keys = frozenset(
        {"step_time", "samples_per_sec", "epoch_time", "train_time", "val_time"}
        | {"test_time", "predict_time"}
    )

    def __init__(self, batch_size: int | None = None) -> None:
        super().__init__()
        self.batch_size = batch_size
        self._in_fit = False

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._in_fit = True
        batch_size = self.batch_size
        if batch_size is None and self.context is not None:
            batch_size = self.context.batch_size
        self._batch_size = int(batch_size) if batch_size else None

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._epoch_start = self._last_batch_end = time.perf_counter()
        self._steps_done = 0
        self._val_time: float | None = None

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        now = time.perf_counter()
        clock = self.clock  # one hook call per execution: it may cover several steps
        steps = clock.step - clock.previous
        elapsed = now - self._last_batch_end
        self._steps_done += steps
        self._last_batch_end = now
        if logs is None or steps <= 0 or elapsed <= 0:
            return
        logs["step_time"] = elapsed / steps
        if self._batch_size:
            logs["samples_per_sec"] = self._batch_size * steps / elapsed

    def on_test_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._test_start = time.perf_counter()

    def on_test_end(self, logs: dict[str, Any] | None = None) -> None:
        elapsed = time.perf_counter() - self._test_start
        if self._in_fit:
            # Validation: the trainer builds the epoch logs from its own copy of these, so the
            # time is reported in on_epoch_end instead.
            self._val_time = (self._val_time or 0.0) + elapsed
        elif logs is not None:
            logs["test_time"] = elapsed

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if logs is None:
            return
        train_time = self._last_batch_end - self._epoch_start
        logs["epoch_time"] = time.perf_counter() - self._epoch_start
        logs["train_time"] = train_time
        if self._val_time is not None:
            logs["val_time"] = self._val_time
        if self._steps_done and train_time > 0:
            logs["step_time"] = train_time / self._steps_done
            if self._batch_size:
                logs["samples_per_sec"] = self._batch_size * self._steps_done / train_time

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        self._in_fit = False

    def on_predict_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._predict_start = time.perf_counter()

    def on_predict_end(self, logs: dict[str, Any] | None = None) -> None:
        if logs is not None:
            logs["predict_time"] = time.perf_counter() - self._predict_start
