"""Progress bars for fit, validation, evaluate and predict; one plain line per epoch in CI logs."""

from __future__ import annotations

import sys
import time
from typing import Any

from rich import progress as rich_progress
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from callbacks.base import TrainkitCallback

MODES = ("auto", "rich", "plain")


class Progress(TrainkitCallback):
    """Shows training, validation, test and predict progress.

    In a terminal it draws ``rich`` progress bars: one for the epochs, one for the batches of
    the current epoch with the live metrics, ETA and samples/s (steps/s when the batch size is
    unknown), and a transient one while validating. When stdout is not a terminal (CI logs,
    ``| tee``) it prints one plain line per epoch, and one line for ``evaluate`` and ``predict``.

    The display is refreshed at most ``refresh_per_second`` times: a batch hook only compares
    the clock with the next refresh time, so a fast loop pays nothing for the display. The class
    attribute ``replaces_keras_progress`` tells the job to call ``fit(..., verbose=0)`` so Keras
    does not print its own progress too; do the same when using it outside the job.

    Hooks: ``on_{train,test,predict}_{begin,end}``, ``on_{train,test,predict}_batch_end``,
    ``on_epoch_{begin,end}``, and ``on_job_end`` (stops a display left open by an exception).

    Args:
        mode: ``auto`` (rich in a terminal, plain otherwise), ``rich`` or ``plain``.
        refresh_per_second: the display's maximum refresh rate.
        batch_size: the training batch size for samples/s; defaults to the run context's.

    Example::

        model.fit(train, epochs=10, validation_data=val, verbose=0, callbacks=[Progress()])
        # conf/callbacks/<stack>.yaml:
        #   progress: {_target_: callbacks.progress.Progress, refresh_per_second: 10}
    """

    # The job leaves Keras's own progress output off when a callback says it replaces it.
    replaces_keras_progress = True

    uses_clock = True

    def __init__(
        self, mode: str = "auto", refresh_per_second: float = 10.0, batch_size: int | None = None
    ) -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        self.mode = mode
        self.min_interval = 1.0 / max(float(refresh_per_second), 0.1)
        self.batch_size = batch_size
        self._display: rich_progress.Progress | None = None
        self._in_fit = False
        self._val_steps: int | None = None
        self._next_refresh = 0.0

    # -- shared -------------------------------------------------------------------------------

    def _resolved_batch_size(self) -> int | None:
        if self.batch_size is not None:
            return int(self.batch_size)
        return self.context.batch_size if self.context is not None else None

    def _use_rich(self) -> bool:
        if self.mode == "rich":
            return True
        return self.mode == "auto" and sys.stdout.isatty()

    def _open_display(self, transient: bool = False) -> rich_progress.Progress:
        self._close_display()
        console = Console(force_terminal=True) if self.mode == "rich" else Console()
        display = rich_progress.Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(bar_width=30),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[rate]}"),
            TextColumn("{task.fields[metrics]}"),
            console=console,
            auto_refresh=False,
            transient=transient,
        )
        display.start()
        self._display = display
        return display

    def _close_display(self) -> None:
        if self._display is not None:
            self._display.refresh()
            self._display.stop()
            self._display = None

    def _print(self, line: str) -> None:
        if self._display is not None:
            self._display.console.print(line, highlight=False, markup=False)
        else:
            print(line, flush=True)

    def _rate(self, steps: int, seconds: float) -> str:
        if seconds <= 0 or steps <= 0:
            return ""
        batch_size = self._resolved_batch_size()
        if batch_size:
            return f"{steps * batch_size / seconds:,.0f} samples/s"
        return f"{steps / seconds:,.1f} steps/s"

    def _due(self, now: float) -> bool:
        if now < self._next_refresh:
            return False
        self._next_refresh = now + self.min_interval
        return True

    # -- fit ----------------------------------------------------------------------------------

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._in_fit = True
        self._val_steps = self.context.steps.val if self.context is not None else None
        self._epochs = self.params.get("epochs") or 0
        self._steps = self.params.get("steps")
        if self._use_rich():
            display = self._open_display()
            self._epochs_task: TaskID = display.add_task(
                "Epochs", total=self._epochs, rate="", metrics=""
            )
            self._batch_task: TaskID = display.add_task(
                "Epoch", total=self._steps, rate="", metrics=""
            )
        else:
            self._display = None

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._epoch = epoch
        self._epoch_start = time.perf_counter()
        # When this epoch's training ended: the last batch hook's time with a live display, or
        # the time validation began (without a display the stack does not call the batch hook).
        self._last_batch_end: float | None = None
        self._steps_done = 0
        self._next_refresh = 0.0
        if self._display is not None:
            self._display.update(self._epochs_task, completed=epoch)
            self._display.reset(
                self._batch_task,
                total=self._steps,
                description=f"Epoch {epoch + 1}/{self._epochs}",
                rate="",
                metrics="",
            )
            self._display.refresh()

    def needs_batch_hook(self, hook: str) -> bool:
        # Without a live display the epoch's line reads the clock: no call a step.
        return hook != "on_train_batch_end" or self._display is not None

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self._steps_done = self.clock.steps_in_epoch  # clipped under steps_per_execution
        self._last_batch_end = now = time.perf_counter()
        if self._display is None or not self._due(now):
            return
        self._display.update(
            self._batch_task,
            completed=self._steps_done,
            rate=self._rate(self._steps_done, now - self._epoch_start),
            metrics=_format_logs(logs),
        )
        self._display.refresh()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        now = time.perf_counter()
        seconds = now - self._epoch_start
        steps = self.clock.steps_in_epoch  # clipped under steps_per_execution
        if self._steps is None:
            self._steps = steps
        # The rate counts training only, not the validation that ran since the last batch.
        train_end = self._last_batch_end if self._last_batch_end is not None else now
        rate = self._rate(steps, train_end - self._epoch_start)
        line = _line(
            f"Epoch {epoch + 1}/{self._epochs}",
            _steps(steps),
            f"{seconds:.1f}s",
            rate,
            _format_logs(logs, sep=" - "),
        )
        if self._display is not None:
            self._display.update(
                self._batch_task,
                completed=steps,
                total=self._steps,
                rate=rate,
                metrics=_format_logs(logs),
            )
            self._display.update(self._epochs_task, completed=epoch + 1)
            self._display.refresh()
        self._print(line)

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        self._in_fit = False
        self._close_display()

    # -- evaluate (and validation inside fit) -------------------------------------------------

    def on_test_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._test_start = time.perf_counter()
        self._test_steps_done = 0
        if self._in_fit:
            if self._display is None:
                self._last_batch_end = self._test_start
            else:
                self._test_task = self._display.add_task(
                    "validate", total=self._val_steps, rate="", metrics=""
                )
            return
        total = self.params.get("steps")
        if self._use_rich():
            self._test_task = self._open_display(transient=True).add_task(
                "Test", total=total, rate="", metrics=""
            )

    def on_test_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self._test_steps_done = batch + 1
        if self._display is None or not self._due(time.perf_counter()):
            return
        self._display.update(
            self._test_task, completed=self._test_steps_done, metrics=_format_logs(logs)
        )
        self._display.refresh()

    def on_test_end(self, logs: dict[str, Any] | None = None) -> None:
        seconds = time.perf_counter() - self._test_start
        if self._in_fit:
            # Inside fit, params["steps"] are the training steps: without the job's step counts,
            # learn the validation length from the first validation so later ones get a bar.
            if self._val_steps is None:
                self._val_steps = self._test_steps_done
            if self._display is not None:
                self._display.remove_task(self._test_task)
            return
        steps = _clamp(self._test_steps_done, self.params.get("steps"))
        self._print(_line("Test", _steps(steps), f"{seconds:.1f}s", _format_logs(logs, sep=" - ")))
        self._close_display()

    # -- predict ------------------------------------------------------------------------------

    def on_predict_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._predict_start = time.perf_counter()
        self._predict_steps_done = 0
        if self._use_rich():
            self._predict_task = self._open_display(transient=True).add_task(
                "Predict", total=self.params.get("steps"), rate="", metrics=""
            )

    def on_predict_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self._predict_steps_done = batch + 1
        if self._display is None or not self._due(time.perf_counter()):
            return
        self._display.update(self._predict_task, completed=self._predict_steps_done)
        self._display.refresh()

    def on_predict_end(self, logs: dict[str, Any] | None = None) -> None:
        seconds = time.perf_counter() - self._predict_start
        steps = _clamp(self._predict_steps_done, self.params.get("steps"))
        self._print(_line("Predict", _steps(steps), f"{seconds:.1f}s"))
        self._close_display()

    def on_job_end(self, status: str) -> None:
        self._close_display()


def _clamp(steps: int, total: int | None) -> int:
    # With steps_per_execution > 1 the last batch index can pass the end of a partial execution.
    return min(steps, total) if total else steps


def _line(*parts: str) -> str:
    return " - ".join(part for part in parts if part)


def _format_logs(logs: dict[str, Any] | None, sep: str = "  ") -> str:
    parts = []
    for key, value in (logs or {}).items():
        if isinstance(value, bool):
            continue
        if isinstance(value, int | float):
            parts.append(f"{key}: {value:.4g}")
        elif isinstance(value, str):
            parts.append(f"{key}: {value}")
    return sep.join(parts)


def _steps(count: int) -> str:
    return f"{count} step" if count == 1 else f"{count} steps"
