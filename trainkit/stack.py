"""One way to wire a callback stack: from config entries (or objects) to a :class:`Stack`.

:func:`build_stack` is what the job, the benchmarks and the tests use, so none of them can forget
a step: each callback gets the job's :class:`~trainkit.context.RunContext` and the stack's
:class:`~callbacks.base.StepClock`; the context learns the callback list and the clock.

:class:`Stack` is a ``keras.callbacks.CallbackList``: pass it to ``fit``, ``evaluate`` and
``predict`` as ``callbacks=stack``. Before any callback sees a train hook it ticks the clock; after
every callback has run a hook that carries logs, it hands the final logs to the callbacks that
record them (:class:`~trainkit.context.LogsObserver`), so a key written by the last callback
reaches the loggers placed before it (``on_train_end`` too: the model is final only after every
callback's ``on_train_end``). A recorder that sets ``after_stack_batches = False`` gets no
``after_stack`` call after the train batches: it keeps a reference to the batch logs (the dict
every callback of the step receives) and reads it once the step is over. Keras sets no params
on a ``CallbackList`` it is given: call :meth:`Stack.for_fit`, :meth:`Stack.for_evaluate` or
:meth:`Stack.for_predict` first.

Under ``steps_per_execution = k > 1`` Keras calls the train batch hooks once per ``k`` steps.
When a callback of the stack takes per-step rows (:class:`~trainkit.context.TakesStepRows`:
MLflow, TensorBoard), the stack has the model's train step record every step's metrics
(:mod:`trainkit.step_rows`), takes them out of the logs and hands them to those callbacks before
the batch hook: every step is recorded, at one host round trip per ``k`` steps.

Batch hooks are the hot path (a GPU step of a small model takes about a millisecond): the stack
calls only the batch hooks a callback overrides, not Keras's no-op defaults; when the hook
profiler is in the stack, the stack's loop times them itself (one clock read a call). Keras's
async dispatch of batch-end hooks (when every callback is ``async_safe``) is kept where a GPU
or TPU is visible, with one worker thread so hooks run in step order; on a CPU the hooks run
inline, which costs less than handing them to a thread (measured in ``docs/benchmarks.md``).
"""

from __future__ import annotations

import concurrent.futures
import inspect
import time
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any

import keras
from hydra._internal.utils import _locate  # what instantiate uses, without its error log
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from keras.src.utils.python_utils import pythonify_logs

from callbacks.base import StepClock, TrainkitCallback
from trainkit.config.callbacks import check_entry
from trainkit.context import (
    JobAware,
    JobStatus,
    LogsObserver,
    RunContext,
    ShowsProgress,
    TakesStepRows,
)
from trainkit.errors import ConfigError, one_line, root_cause
from trainkit.step_rows import BLOCK_KEY, COUNT_KEY, StepRows


def instantiate_callbacks(entries: Mapping[str, Any] | None) -> list[keras.callbacks.Callback]:
    """Build each ``_target_`` entry of the ``callbacks`` group, in order; null entries are
    skipped, so ``callbacks.tensorboard=null`` and ``~callbacks.tensorboard`` both remove one.

    A callback that cannot be imported or built is a :class:`ConfigError` whose one line names
    the entry and the real cause (``No module named 'mypkg'``, a misspelt option, a value of the
    wrong type, the class's own ``ValueError``), not Hydra's wrapper.
    """
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
        target = str(entry["_target_"])
        check_callback_entry(name, target, entry)
        try:
            callback = instantiate(entry, _convert_="all")
        except InstantiationException as exc:
            raise ConfigError(
                f"callbacks.{name} ({target}) cannot be built: {root_cause(exc)}: "
                f"fix callbacks.{name}'s options"
            ) from exc
        if not isinstance(callback, keras.callbacks.Callback):
            raise ConfigError(f"callbacks.{name}: {target} is not a keras.callbacks.Callback")
        callback.trainkit_name = name
        callbacks.append(callback)
    return callbacks


def check_callback_entry(name: str, target: str, entry: Mapping[str, Any]) -> None:
    """Import ``target`` and check the entry's options against its signature: names, and the
    types the signature annotates (``patience=abc`` for an ``int``). Raises :class:`ConfigError`.
    """
    try:
        cls = _locate(target)
    except Exception as exc:  # noqa: BLE001 - ImportError, AttributeError, the module's own
        # _locate's ImportError says what it tried ("Are you sure that 'Mien' is importable
        # from module 'mypkg'?"); an error raised by the module itself is its root cause.
        reason = one_line(str(exc)) if type(exc) is ImportError else root_cause(exc)
        raise ConfigError(
            f"callbacks.{name}._target_={target} cannot be imported: {reason}: fix "
            "the dotted path (package.module.Class) or put its package on PYTHONPATH"
        ) from exc
    options = {k: v for k, v in entry.items() if not str(k).startswith("_")}
    try:
        signature = inspect.signature(cls)
    except (TypeError, ValueError):
        return
    try:
        signature.bind(**options)
    except TypeError as exc:
        accepted = [
            p.name
            for p in signature.parameters.values()
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        ]
        raise ConfigError(
            f"callbacks.{name} ({target}): {exc}: its options are {', '.join(accepted)}"
        ) from exc
    try:
        hints = typing.get_type_hints(getattr(cls, "__init__", cls))
    except Exception:  # noqa: BLE001 - unresolvable annotations: Python checks nothing either
        return
    for key, value in options.items():
        hint = hints.get(key)
        if hint is not None and not _fits(value, hint):
            raise ConfigError(
                f"callbacks.{name}.{key}={value!r} is not {_type_name(hint)}: "
                f"set callbacks.{name}.{key} to {_type_name(hint)}"
            )


def _fits(value: Any, hint: Any) -> bool:
    """Whether a config value fits a simple annotation; anything not simple counts as fitting."""
    if hint is Any:
        return True
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, arg) for arg in typing.get_args(hint))
    if origin is typing.Literal:
        return value in typing.get_args(hint)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    return True


def _type_name(hint: Any) -> str:
    names = {int: "a whole number", float: "a number", bool: "true or false", str: "a string"}
    if hint in names:
        return names[hint]
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        parts = [_type_name(a) for a in typing.get_args(hint) if a is not type(None)]
        nullable = type(None) in typing.get_args(hint)
        return " or ".join(parts + (["null"] if nullable else []))
    if typing.get_origin(hint) is typing.Literal:
        return "one of " + ", ".join(map(str, typing.get_args(hint)))
    return getattr(hint, "__name__", str(hint))


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

    On a worker that is not the chief (``context.is_chief`` False), callbacks whose class sets
    ``chief_only = True`` are not part of the stack: no hook reaches them.

    Attributes:
        skipped: the chief-only callbacks left out on a non-chief worker.
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
        # Off the chief of a multi-worker job, callbacks that write shared output are left out.
        self.skipped = [] if context.is_chief else [cb for cb in callbacks if _chief_only(cb)]
        self.user_callbacks = [cb for cb in callbacks if not any(cb is s for s in self.skipped)]
        context.clock = self.clock
        context.callbacks = self.user_callbacks
        for callback in self.user_callbacks:
            if hasattr(callback, "set_context"):
                callback.set_context(context)
            if isinstance(callback, TrainkitCallback):
                callback.set_clock(self.clock)
        self._observers = [cb for cb in self.user_callbacks if isinstance(cb, LogsObserver)]
        self._after_batch: tuple[Any, ...] = ()
        # Under steps_per_execution > 1: every step's metrics, for the recorders that take them.
        self._row_takers = tuple(
            cb.on_train_steps for cb in self.user_callbacks if isinstance(cb, TakesStepRows)
        )
        self._step_rows: StepRows | None = None
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
        self._bind_batch_hooks()
        if not _on_accelerator():
            # Keras hands batch-end hooks to a thread when every callback allows it, so that a
            # GPU step's logs are turned into floats off the training thread. On a CPU the step
            # is done when train_function returns: submitting to the thread costs more (about
            # 70 us a step on this machine, against 56 us for the whole dispatch done inline)
            # and the worker then competes for the GIL. So: inline on CPUs.
            self._async_train = self._async_test = self._async_predict = False

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
        self._install_step_rows()
        super().on_train_begin(logs)
        self._bind_batch_hooks()  # after the callbacks' own: their options are set up

    def _install_step_rows(self) -> None:
        """With ``k > 1`` steps an execution and a recorder that takes rows: the model's train
        step also returns every step's metrics (:mod:`trainkit.step_rows`)."""
        model = self.model
        if self.clock.steps_per_execution < 2 or not self._row_takers or model is None:
            return
        rows = self._step_rows
        if rows is None or rows.model is not model or rows.k != self.clock.steps_per_execution:
            self._step_rows = rows = StepRows(model)
        rows.install()

    def _remove_step_rows(self) -> None:
        if self._step_rows is not None:
            self._step_rows.remove()

    def on_test_begin(self, logs: dict[str, Any] | None = None) -> None:
        super().on_test_begin(logs)
        self._bind_batch_hooks()

    def on_predict_begin(self, logs: dict[str, Any] | None = None) -> None:
        super().on_predict_begin(logs)
        self._bind_batch_hooks()

    # -- batch hooks: the hot path --------------------------------------------------------------

    def _bind_batch_hooks(self) -> None:
        """Per batch hook, the bound methods of the callbacks that do something in it.

        Keras's ``CallbackList`` calls every callback's hook at every batch, Keras's no-op
        defaults included (History's, most loggers' ``on_train_batch_begin``): a Python call
        each. The stack calls only the hooks a callback overrides (Keras marks its defaults
        ``_is_default``; the default of ``on_train_batch_end`` forwards to the legacy
        ``on_batch_end``, so overriding either counts), in the list's order, and of those only
        the ones the callback needs under its options (``TrainkitCallback.needs_batch_hook``).
        Bound at each ``on_*_begin``, after every callback's own (the hook profiler has wrapped
        what it times). A recorder that keeps a reference to the batch logs and reads them
        later (the hook log, MLflow, TensorBoard) sets ``after_stack_batches = False``: it gets
        no ``after_stack`` call after each train batch.
        """
        legacy = {"on_train_batch_begin": "on_batch_begin", "on_train_batch_end": "on_batch_end"}
        self._batch_hooks = {}
        for hook in _BATCH_HOOKS:
            bound: list[Any] = []
            timed: list[tuple[Any, Any]] = []
            for callback in self.callbacks:
                method = getattr(callback, hook)
                old = legacy.get(hook)
                if isinstance(callback, TrainkitCallback) and not callback.needs_batch_hook(hook):
                    continue
                if not getattr(method, "_is_default", False) or (
                    old is not None and not getattr(getattr(callback, old), "_is_default", False)
                ):
                    bound.append(method)
                    # The hook profiler's wrapper: the loop below times the method itself.
                    timed.append(getattr(method, "trainkit_timed", (method, None)))
            if any(stats is not None for _, stats in timed):
                self._batch_hooks[hook] = _TimedHooks(timed)
            else:
                self._batch_hooks[hook] = tuple(bound)
        self._after_batch = tuple(
            observer.after_stack
            for observer in self._observers
            if getattr(observer, "after_stack_batches", True)
        )

    def _dispatch(self, hook: str, batch: int, logs: dict[str, Any] | None) -> None:
        hooks = self._batch_hooks[hook]
        if hooks:
            _run(hooks, batch, _pythonify(logs))

    def on_train_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self._dispatch("on_train_batch_begin", batch, logs)

    def on_test_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self._dispatch("on_test_batch_begin", batch, logs)

    def on_predict_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self._dispatch("on_predict_batch_begin", batch, logs)

    def _on_test_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self._dispatch("on_test_batch_end", batch, logs)

    def _on_predict_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self._dispatch("on_predict_batch_end", batch, logs)

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.clock.epoch_begin(epoch)
        super().on_epoch_begin(epoch, logs)

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        # The per-step block leaves Keras's logs here, on the training thread, before Keras
        # reads them again at the epoch's end (its epoch logs are the metrics only when the
        # keys match) and before any callback sees them.
        block = None
        if logs and self._step_rows is not None and BLOCK_KEY in logs:
            block = (logs.pop(BLOCK_KEY), logs.pop(COUNT_KEY))
        if self._async_train:
            self._async_dispatch(self._on_train_batch_end, batch, logs, block)
        else:
            self._on_train_batch_end(batch, logs, block)

    def _on_train_batch_end(
        self, batch: int, logs: dict[str, Any] | None = None, block: tuple[Any, Any] | None = None
    ) -> None:
        self.clock.batch_end(batch)
        if block is not None and self._step_rows is not None:
            earlier = self.clock.step - self.clock.previous - 1
            if earlier > 0:
                rows = self._step_rows.rows(block[0], block[1], earlier)
                steps = range(self.clock.previous + 1, self.clock.step)
                for take in self._row_takers:
                    take(steps, rows)
        logs = _pythonify(logs)
        _run(self._batch_hooks["on_train_batch_end"], batch, logs)
        for after_stack in self._after_batch:
            after_stack("on_train_batch_end", batch, logs)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if self._async_train:
            self._flush_futures()
        logs = pythonify_logs(logs)
        for callback in self.callbacks:
            callback.on_epoch_end(epoch, logs)
        for observer in self._observers:
            observer.after_stack("on_epoch_end", epoch, logs)

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        # After every callback's on_train_end: early stopping has restored the best weights,
        # so what a recorder saves now is the model that evaluate() will measure.
        if self._async_train:
            self._flush_futures()
        logs = pythonify_logs(logs)
        for callback in self.callbacks:
            callback.on_train_end(logs)
        for observer in self._observers:
            observer.after_stack("on_train_end", None, logs)
        self._remove_step_rows()
        self._on_end()

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
        self._remove_step_rows()  # a fit cut short by an exception never reached on_train_end
        for callback in self.user_callbacks:
            if not isinstance(callback, JobAware):
                continue
            try:
                callback.on_job_end(status)
            except Exception as exc:  # noqa: BLE001 - one bad closer must not hide the others
                name = getattr(callback, "trainkit_name", type(callback).__name__)
                problems.append(f"{name}: {exc.__class__.__name__}: {exc}")
        return problems


class _TimedHooks:
    """Batch hooks some of which the hook profiler times, called in one loop that reads the
    clock once per call (the end of one call is the start of the next) and adds to the
    profiler's stats ``[calls, total, max]``: no wrapper frame per hook."""

    __slots__ = ("pairs",)

    def __init__(self, pairs: list[tuple[Any, Any]]) -> None:
        self.pairs = tuple(pairs)

    def __bool__(self) -> bool:
        return bool(self.pairs)

    def __call__(self, batch: int, logs: dict[str, Any]) -> None:
        clock = time.perf_counter
        start = clock()
        for method, stats in self.pairs:
            method(batch, logs=logs)
            end = clock()
            if stats is not None:
                elapsed = end - start
                stats[0] += 1
                stats[1] += elapsed
                if elapsed > stats[2]:
                    stats[2] = elapsed
            start = end


_BATCH_HOOKS = (
    "on_train_batch_begin",
    "on_train_batch_end",
    "on_test_batch_begin",
    "on_test_batch_end",
    "on_predict_batch_begin",
    "on_predict_batch_end",
)


def _pythonify(logs: Any) -> dict[str, Any]:
    """Keras's ``pythonify_logs`` (keys sorted, values as Python floats), in half the time for
    the usual batch logs (scalar tensors): ``float()`` on each value directly. Anything else
    (a nested dict, an array of outputs, a string) goes to Keras's own function."""
    if not logs:
        return {}
    out = {}
    try:
        for key in sorted(logs):
            value = logs[key]
            out[key] = value if type(value) is float else float(value)
    except (TypeError, ValueError):
        return pythonify_logs(logs)
    return out


def _on_accelerator() -> bool:
    """Whether TensorFlow sees a GPU (or TPU): then Keras's async batch dispatch pays off."""
    try:
        import tensorflow as tf

        return bool(tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("TPU"))
    except Exception:  # noqa: BLE001 - another backend, or no TensorFlow: keep Keras's choice
        return True


def _run(hooks: Any, batch: int, logs: dict[str, Any]) -> None:
    if hooks.__class__ is tuple:
        for hook in hooks:
            hook(batch, logs=logs)
    else:
        hooks(batch, logs)


def _chief_only(callback: keras.callbacks.Callback) -> bool:
    return bool(getattr(callback, "chief_only", False))
