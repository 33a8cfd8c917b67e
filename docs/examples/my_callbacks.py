"""The worked example of docs/writing-callbacks.md: a callback added to a run without touching
trainkit.

    PYTHONPATH=docs/examples python run.py callbacks=full \\
        +callbacks.mine._target_=my_callbacks.BatchLossCSV +callbacks.mine.every=10
"""

from __future__ import annotations

import csv
from typing import Any

from callbacks.base import TrainkitCallback


class BatchLossCSV(TrainkitCallback):
    """Every ``every`` training steps, remembers the batch logs' ``loss`` (and ``lr`` when an
    earlier callback wrote it); at each epoch end appends those rows to
    ``<run_dir>/batch_loss.csv`` and puts the number of rows into the epoch logs
    (``batch_loss_rows``) for the loggers that come after it.

    The batch hook only appends a tuple to a list; the file is written once per epoch.

    Hooks: ``on_train_begin``, ``on_epoch_begin``, ``on_train_batch_end``, ``on_epoch_end``,
    ``on_job_end``.

    Args:
        every: keep one row every this many steps.
    """

    def __init__(self, every: int = 10) -> None:
        super().__init__()
        if every < 1:
            raise ValueError(f"every must be at least 1, got {every}")
        self.every = every

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._rows: list[tuple[int, int, float, float | None]] = []
        self._written = 0
        self._steps = self.params.get("steps") or 0
        self._file = open(self.run_path("batch_loss.csv"), "w", newline="")  # noqa: SIM115
        self._writer = csv.writer(self._file)
        self._writer.writerow(["epoch", "step", "loss", "lr"])

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._epoch = epoch
        self._last_step = epoch * self._steps

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        # With steps_per_execution = k this runs once per k steps and `batch` is the index of
        # the execution's last step: check whether a multiple of `every` was passed since the
        # last call rather than testing `batch % every`.
        step = self._epoch * self._steps + batch + 1
        if step // self.every > self._last_step // self.every and logs:
            self._rows.append((self._epoch, step, logs.get("loss", float("nan")), logs.get("lr")))
        self._last_step = step

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._writer.writerows(self._rows)
        self._file.flush()
        self._written += len(self._rows)
        if logs is not None:
            logs["batch_loss_rows"] = float(len(self._rows))
        self._rows.clear()

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        if self.context is None:  # outside the job nobody calls on_job_end
            self.on_job_end("FINISHED")

    def on_job_end(self, status: str) -> None:
        file = getattr(self, "_file", None)
        if file is not None and not file.closed:
            file.close()
