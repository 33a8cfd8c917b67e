"""One way to wire a callback stack: from config entries (or objects) to a :class:`Stack`.

:func:`build_stack` is what the job, the benchmarks and the tests use, so none of them can forget
a step: each callback gets the job's :class:`~trainkit.context.RunContext` and the stack's
:class:`~callbacks.base.StepClock`; the context learns the callback list and the clock.

:class:`Stack` is a ``keras.callbacks.CallbackList``: pass it to ``fit``, ``evaluate`` and
``predict`` as ``callbacks=stack``. Before any callback sees a train hook it ticks the clock; after
every callback has run a hook that carries logs, it hands the final logs to the callbacks that
record them (:class:`~trainkit.context.LogsObserver`), so a key written by the last callback
reaches the loggers placed before it. Keras sets no params on a ``CallbackList`` it is given:
call :meth:`Stack.for_fit`, :meth:`Stack.for_evaluate` or :meth:`Stack.for_predict` first.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterable, Mapping
from typing import Any

import keras
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from keras.src.utils.python_utils import pythonify_logs

from callbacks.base import StepClock, TrainkitCallback
from trainkit.config.callbacks import check_entry
from trainkit.context import JobAware, JobStatus, LogsObserver, RunContext, ShowsProgress
from trainkit.errors import ConfigError


def instantiate_callbacks(entries: Mapping[str, Any] | None) -> list[keras.callbacks.Callback]:
    """Build each ``_target_`` entry of the ``callbacks`` group, in order; null entries are
    skipped, so ``callbacks.tensorboard=null`` and ``~callbacks.tensorboard`` both remove one."""
    callbacks: list[keras.callbacks.Callback] = []
    for name, entry in (entries or {}).items():
        if entry is None:
            continue
        # every key must be an option of the target's signature (a '+' override can add any)
        check_entry(name, entry)
        if not isinstance(entry, Mapping) or "_target_" not in entry:
            raise ConfigError(
                f"callbacks.{name} must be a dict with a _target_ "
                f"(e.g. +callbacks.{name}._target_=mypkg.MyCallback), got {entry!r}"
            )
        try:
            callback = instantiate(entry, _convert_="all")
        except InstantiationException as exc:
            reason = str(exc).strip().splitlines()[-1]
            raise ConfigError(f"callbacks.{name} ({entry['_target_']}) failed: {reason}") from None
        if not isinstance(callback, keras.callbacks.Callback):
            raise ConfigError(
                f"callbacks.{name}: {entry['_target_']} is not a keras.callbacks.Callback"
            )
        callback.trainkit_name = name
        callbacks.append(callback)
    return callbacks


def build_stack(
    callbacks: Mapping[str, Any] | Iterable[keras.callbacks.Callback] | None,
    context: RunContext,
    model: keras.Model | None = None,
) -> Stack:
    """The job's callbacks, wired: ``callbacks`` is the ``callbacks`` config group (a mapping of
    ``_target_`` entries) or callback objects already built."""
    if callbacks is None or isinstance(callbacks, Mapping):
        built = instantiate_callbacks(callbacks)
    else:
        built = list(callbacks)
    return Stack(built, context, model=model)


class Stack(keras.callbacks.CallbackList):
    """The job's callbacks as one Keras ``CallbackList`` that ticks the shared clock.

    Attributes:
        clock: the :class:`~callbacks.base.StepClock` every library callback reads.
        context: the run context, whose ``callbacks`` and ``clock`` this stack sets.
        user_callbacks: the callbacks of the stack, without the History / progress bar that
            Keras's fit would add and this stack adds in their place.
    """

    def __init__(
        self,
        callbacks: list[keras.callbacks.Callback],
        context: RunContext,
        model: keras.Model | None = None,
    ) -> None:
        self.clock = context.clock or StepClock()
        self.context = context
        self.user_callbacks = list(callbacks)
        context.clock = self.clock
        context.callbacks = self.user_callbacks
        for callback in self.user_callbacks:
            if hasattr(callback, "set_context"):
                callback.set_context(context)
            if isinstance(callback, TrainkitCallback):
                callback.set_clock(self.clock)
        self._observers = [cb for cb in self.user_callbacks if isinstance(cb, LogsObserver)]
        shows_progress = any(
            isinstance(cb, ShowsProgress) and cb.replaces_keras_progress
            for cb in self.user_callbacks
        )
        super().__init__(
            list(self.user_callbacks),
            add_history=True,
            add_progbar=not shows_progress,
            model=model,
        )

    @property
    def shows_progress(self) -> bool:
        """Whether a callback of the stack draws progress (Keras's bar is then left out)."""
        return self._progbar is None

    # -- params: what Keras would have set on a list it built itself -------------------------

    def for_fit(self, epochs: int, steps: int | None, verbose: int = 0) -> Stack:
        self.set_params({"verbose": verbose, "epochs": int(epochs), "steps": steps})
        return self

    def for_evaluate(self, steps: int | None, verbose: int = 0) -> Stack:
        self.set_params({"verbose": verbose, "epochs": 1, "steps": steps})
        return self

    def for_predict(self, steps: int | None, verbose: int = 0) -> Stack:
        return self.for_evaluate(steps, verbose)

    # -- the clock ticks before any callback sees the hook -----------------------------------

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self.clock.train_begin(self.params, self.model)
        super().on_train_begin(logs)

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.clock.epoch_begin(epoch)
        super().on_epoch_begin(epoch, logs)

    def _on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self.clock.batch_end(batch)
        logs = pythonify_logs(logs)
        for callback in self.callbacks:
            callback.on_train_batch_end(batch, logs=logs)
        for observer in self._observers:
            observer.after_stack("on_train_batch_end", batch, logs)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if self._async_train:
            self._flush_futures()
        logs = pythonify_logs(logs)
        for callback in self.callbacks:
            callback.on_epoch_end(epoch, logs)
        for observer in self._observers:
            observer.after_stack("on_epoch_end", epoch, logs)

    def on_test_end(self, logs: dict[str, Any] | None = None) -> None:
        if self._async_test:
            self._flush_futures()
        logs = pythonify_logs(logs)
        for callback in self.callbacks:
            callback.on_test_end(logs)
        for observer in self._observers:
            observer.after_stack("on_test_end", None, logs)
        self._on_end()

    def _on_begin(self) -> None:
        # Keras's pool has several threads: two batch-end dispatches could run at once and read
        # the clock out of order. One worker keeps them in step order, off the training thread.
        self._in_begin_end_block_count += 1
        if (
            self._in_begin_end_block_count == 1
            and (self._async_train or self._async_test or self._async_predict)
            and self._executor is None
        ):
            self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1)

    # -- the job's end --------------------------------------------------------------------------

    def end_job(self, status: JobStatus) -> list[str]:
        """Call ``on_job_end(status)`` on each callback that has it; never raises.

        Returns the messages of the callbacks that failed to close, so the job can report them
        without losing the original error.
        """
        problems = []
        for callback in self.user_callbacks:
            if not isinstance(callback, JobAware):
                continue
            try:
                callback.on_job_end(status)
            except Exception as exc:  # noqa: BLE001 - one bad closer must not hide the others
                name = getattr(callback, "trainkit_name", type(callback).__name__)
                problems.append(f"{name}: {exc.__class__.__name__}: {exc}")
        return problems
