"""The spine every library callback reads: the step clock, a metric's direction, the base class.

Facts that several callbacks need are computed here once:

:class:`StepClock`
    the global optimizer step, the epoch base, ``steps_per_execution`` and ``due(every_n)``.
    In a job the stack (:func:`trainkit.stack.build_stack`) ticks one clock before any callback
    sees a hook, and every callback reads it as ``self.clock``. A library callback used in a
    plain ``model.fit(callbacks=[...])`` ticks a clock of its own, so it counts the same.

:func:`metric_direction`
    whether a monitored value improves down (``"min"``) or up (``"max"``): the metric's own
    direction first, as Keras decides it, then the name.

:class:`TrainkitCallback`
    ``keras.callbacks.Callback`` plus what the job adds: ``set_context(ctx)`` (the
    :class:`trainkit.context.RunContext`), ``self.clock``, ``self.is_chief``, ``run_path()`` and
    ``on_job_end(status)``, called once after ``fit``, ``evaluate`` and ``predict`` (or the
    exception that cut them short) with a :class:`trainkit.context.JobStatus`.

A callback used outside the job gets no context: it then writes under ``./trainkit_run`` and
closes its writers at ``on_train_end``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import keras
import numpy as np

from trainkit.context import JobStatus, RunContext

DEFAULT_RUN_DIR = Path("trainkit_run")

# The 16 methods Keras calls on a callback, in the order of keras.callbacks.Callback.
KERAS_HOOKS = (
    "set_model",
    "set_params",
    "on_train_begin",
    "on_train_end",
    "on_epoch_begin",
    "on_epoch_end",
    "on_train_batch_begin",
    "on_train_batch_end",
    "on_test_begin",
    "on_test_end",
    "on_test_batch_begin",
    "on_test_batch_end",
    "on_predict_begin",
    "on_predict_end",
    "on_predict_batch_begin",
    "on_predict_batch_end",
)

Direction = Literal["min", "max"]

# Names whose value improves downwards / upwards, for metrics that do not say so themselves.
_LOWER_WORDS = ("loss", "error", "mae", "mse", "mape", "msle", "rmse", "hinge", "crossentropy")
_HIGHER_WORDS = ("acc", "auc", "precision", "recall", "f1", "iou", "top_k", "top5", "score")


def _compiled_metrics(model: Any) -> list[Any]:
    found: list[Any] = []
    for metric in getattr(model, "metrics", None) or []:
        inner = getattr(metric, "metrics", None)
        if isinstance(inner, list | tuple):  # Keras's CompileMetrics / MetricsList
            found.extend(inner)
        else:
            found.append(metric)
    return found


def metric_direction(monitor: str, model: Any = None, mode: str = "auto") -> Direction:
    """``"min"`` or ``"max"``: which way ``monitor`` improves.

    ``mode`` ``"min"`` or ``"max"`` wins. With ``"auto"``: a compiled metric of ``model`` with
    that name (``val_`` removed) and a direction of its own decides, as in Keras's
    ``MonitorCallback``; else a name ending in ``loss`` or holding ``error``, ``mae`` ... is
    ``min`` and one holding ``acc``, ``auc``, ``f1`` ... is ``max``.

    Raises:
        ValueError: the direction cannot be told; the message says to pass ``mode``.
    """
    if mode in ("min", "max"):
        return mode  # type: ignore[return-value]
    if mode != "auto":
        raise ValueError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
    name = monitor.removeprefix("val_").removeprefix("test_")
    if name == "loss":
        return "min"
    for metric in _compiled_metrics(model):
        direction = getattr(metric, "_direction", None)
        if metric.name == name and direction in ("up", "down"):
            return "max" if direction == "up" else "min"
    lowered = name.lower()
    if lowered.endswith("loss") or any(word in lowered for word in _LOWER_WORDS):
        return "min"
    if any(word in lowered for word in _HIGHER_WORDS):
        return "max"
    raise ValueError(
        f"cannot tell whether '{monitor}' improves upwards or downwards: "
        "pass mode='max' or mode='min'"
    )


def is_better(value: float, best: float | None, direction: Direction, min_delta: float = 0.0):
    """Whether ``value`` beats ``best`` by more than ``min_delta`` in ``direction``."""
    if best is None:
        return True
    delta = abs(min_delta)
    return value < best - delta if direction == "min" else value > best + delta


class StepClock:
    """The global optimizer step of a fit, shared by every callback of a stack.

    Attributes (read them; only the stack ticks them):
        step: optimizer steps done, counted over every fit of the job (0 before the first);
            at ``on_train_batch_end`` it includes the step(s) that just ran.
        previous: ``step`` before the last batch hook (one execution = ``steps_per_execution``
            steps back, or fewer at an epoch's end).
        epoch: the current epoch, 0-based, as Keras passes it.
        epoch_base: global steps done before the current epoch.
        steps_per_epoch: ``params["steps"]`` of the fit, or None when unknown.
        steps_per_execution: the model's; Keras calls batch hooks once per execution.
        final_step: the largest step reached; a later fit continues after it.

    Under ``steps_per_execution > 1`` Keras passes the last batch index of each execution and
    does not clip it at the epoch's end: the clock clips it.
    """

    def __init__(self) -> None:
        self.step = 0
        self.previous = 0
        self.epoch = 0
        self.epoch_base = 0
        self.steps_per_epoch: int | None = None
        self.steps_per_execution = 1
        self.final_step = 0
        self._offset = 0
        self._skipped = 0
        self._resume: tuple[int, int] | None = None

    # -- ticks (called by the stack, or by a callback's own wrapper outside a stack) ----------

    def train_begin(self, params: dict[str, Any] | None, model: Any) -> None:
        steps = (params or {}).get("steps")
        self.steps_per_epoch = int(steps) if steps else None
        self.steps_per_execution = max(1, int(getattr(model, "steps_per_execution", 1) or 1))
        # A second fit in the same job (a fine-tuning stage, an LR finder before training)
        # continues the count instead of counting steps 1, 2 ... again.
        self._offset = self.final_step

    def resume_within_epoch(self, epoch: int, steps_done: int) -> None:
        """The next ``epoch_begin(epoch)`` starts ``steps_done`` steps into that epoch (an
        exact resume whose pipeline continues at the next unseen batch)."""
        self._resume = (int(epoch), int(steps_done))

    def epoch_begin(self, epoch: int) -> None:
        self.epoch = int(epoch)
        if self.steps_per_epoch:
            self.epoch_base = self._offset + self.epoch * self.steps_per_epoch
        else:  # unknown epoch length: count the steps seen
            self.epoch_base = max(self.step, self._offset)
        self._skipped = 0
        if self._resume is not None and self._resume[0] == self.epoch:
            self._skipped = self._resume[1]
            self._resume = None
        self.previous = self.step = self.epoch_base + self._skipped

    def batch_end(self, batch: int) -> int:
        """Record a train batch hook (Keras's ``batch`` index); returns the global step."""
        done = int(batch) + 1 + self._skipped
        if self.steps_per_epoch and done > self.steps_per_epoch:
            done = self.steps_per_epoch
        self.previous = self.step
        self.step = self.epoch_base + done
        if self.step > self.final_step:
            self.final_step = self.step
        return self.step

    # -- reads -------------------------------------------------------------------------------

    @property
    def steps_in_epoch(self) -> int:
        """Steps done in the current epoch (resumed ones included)."""
        return self.step - self.epoch_base

    def due(self, every_n: int | None) -> bool:
        """Whether the last batch hook crossed a multiple of ``every_n`` steps (False for 0 or
        None). With ``steps_per_execution = k`` it is True once per crossing, at the first hook
        call past each multiple."""
        if not every_n or every_n < 1:
            return False
        return self.step // every_n > self.previous // every_n


class TrainkitCallback(keras.callbacks.Callback):
    """Base class for library callbacks that write files or need the run's facts.

    Subclasses that override ``set_model`` call ``super().set_model(model)``. A subclass that
    reads ``self.clock`` sets ``uses_clock = True``: outside a stack it then ticks a clock of its
    own (its ``on_train_begin``, ``on_epoch_begin`` and ``on_train_batch_end`` are wrapped to
    tick it first). A subclass that writes what only one process of a multi-worker job may
    write (MLflow, TensorBoard, checkpoints, ``events.jsonl``) sets ``chief_only = True``. A
    subclass that adds log keys measuring the machine rather than the model (times,
    throughput) names them in ``system_keys``.
    """

    uses_clock: bool = False
    # A callback that writes shared output (tracking, event files, checkpoints) sets this True:
    # in a multi-worker job the stack calls it on the chief only (trainkit.stack.Stack).
    chief_only: bool = False
    # Log keys this callback adds that measure the machine, not the model (step_time ...).
    # Trackers that group metrics read the union, RunContext.system_keys: MLflow files them
    # under system/, its System metrics tab, so a run's page opens on loss and accuracy.
    system_keys: ClassVar[frozenset[str]] = frozenset()

    def __init__(self) -> None:
        super().__init__()
        self.context: RunContext | None = None
        self._clock: StepClock | None = None
        self._own_clock = False
        self.in_stack = False  # set by the stack (set_clock); a plain model.fit leaves it False

    # -- the job's additions -----------------------------------------------------------------

    def set_context(self, context: RunContext) -> None:
        self.context = context

    def set_clock(self, clock: StepClock) -> None:
        """Called by the stack: read this clock instead of ticking one of our own. From then
        on ``in_stack`` is True: the stack calls ``after_stack`` on the loggers."""
        if self._own_clock:
            self._unwrap_own_clock()
        self._clock = clock
        self.in_stack = True

    @property
    def clock(self) -> StepClock:
        if self._clock is None:
            self._tick_own_clock()
        assert self._clock is not None
        return self._clock

    @property
    def is_chief(self) -> bool:
        """Whether this process writes files and tracking (always True outside a cluster)."""
        return self.context.is_chief if self.context is not None else True

    @property
    def run_dir(self) -> Path:
        return self.context.run_dir if self.context is not None else DEFAULT_RUN_DIR

    def run_path(self, *parts: str) -> Path:
        """A path under the run directory, its parent folder created."""
        target = self.run_dir.joinpath(*parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    def on_job_end(self, status: JobStatus) -> None:
        """Called once by the job when everything has run; override to flush and close."""

    def needs_batch_hook(self, hook: str) -> bool:
        """Whether the stack should call ``hook`` (a batch hook this class overrides) in the
        phase that begins. The stack asks at each ``on_{train,test,predict}_begin``, after every
        callback's own: a callback whose options leave a batch hook with nothing to do returns
        False, and a step makes one Python call less (batch hooks are the hot path). Outside a
        stack Keras calls every hook, so the hook itself must still be right to call."""
        return True

    # -- a clock of its own outside a stack --------------------------------------------------

    def set_model(self, model: Any) -> None:
        super().set_model(model)
        if self._clock is None and self.uses_clock:
            self._tick_own_clock()

    _TICKED = ("on_train_begin", "on_epoch_begin", "on_train_batch_end")

    def _tick_own_clock(self) -> None:
        """Outside a stack nobody ticks a clock for us: wrap our own hooks to do it first."""
        clock = self._clock = StepClock()
        self._own_clock = True
        on_train_begin, on_epoch_begin = self.on_train_begin, self.on_epoch_begin
        on_train_batch_end = self.on_train_batch_end

        def train_begin(logs: dict[str, Any] | None = None) -> None:
            clock.train_begin(self.params, self.model)
            on_train_begin(logs)

        def epoch_begin(epoch: int, logs: dict[str, Any] | None = None) -> None:
            clock.epoch_begin(epoch)
            on_epoch_begin(epoch, logs)

        def train_batch_end(batch: int, logs: dict[str, Any] | None = None) -> None:
            clock.batch_end(batch)
            on_train_batch_end(batch, logs)

        self.on_train_begin = train_begin  # type: ignore[method-assign]
        self.on_epoch_begin = epoch_begin  # type: ignore[method-assign]
        self.on_train_batch_end = train_batch_end  # type: ignore[method-assign]

    def _unwrap_own_clock(self) -> None:
        for hook in self._TICKED:
            self.__dict__.pop(hook, None)
        self._own_clock = False


def read_variables(variables: Sequence[Any]) -> list[Any]:
    """The current values of ``variables`` as a snapshot that later steps do not change:
    TensorFlow tensors (a ``ReadVariableOp`` each; the runtime copies a buffer only when a step
    writes it while the read is alive), numpy copies for a backend without one. Used by the
    backup, the NaN guard's restore point, early stopping's best weights, TensorBoard's
    histograms and the checkpoint's background saves.

    An eager op costs 20-100 us on this project's CPUs: ``variable.numpy()`` (Keras's
    ``get_weights``) runs two (a read and an ``Identity``) and copies the buffer, about three
    times what a read costs. Plain (not distributed) variables, from :data:`TRACED_READ_FROM`
    of them on, are read in one traced call instead of one eager op each: MobileNetV2 with
    Adam's 580 variables in 2.0-3.7 ms instead of 10-11 here. Convert a snapshot with
    :func:`to_numpy` where it is needed, off the training thread or when it is read."""
    raws = [getattr(variable, "value", variable) for variable in variables]  # backend variables
    if len(raws) >= TRACED_READ_FROM and _plain_tf_variables(raws):
        return list(_traced_reader(raws)())
    values = []
    for variable, raw in zip(variables, raws, strict=True):
        read = getattr(raw, "value", None)  # tf.Variable.value(): one ReadVariableOp
        values.append(read() if callable(read) else keras.ops.convert_to_numpy(variable))
    return values


# Below this many variables the eager reads cost about what one traced call does.
TRACED_READ_FROM = 16


def _plain_tf_variables(raws: list[Any]) -> bool:
    try:
        import tensorflow as tf
    except ImportError:
        return False
    # A distributed variable's read may be a collective (a metric's under a multi-worker
    # strategy): those keep their eager reads, at the point every worker reaches.
    return all(
        isinstance(raw, tf.Variable) and not isinstance(raw, tf.distribute.DistributedValues)
        for raw in raws
    )


def _traced_reader(raws: list[Any]) -> Any:
    """One ``tf.function`` per list of variables, kept on its first variable (a cycle the
    garbage collector frees with the variables)."""
    import tensorflow as tf

    key = tuple(id(raw) for raw in raws)
    readers = getattr(raws[0], "_trainkit_readers", None)
    if readers is None:
        readers = {}
        raws[0]._trainkit_readers = readers
    reader = readers.get(key)
    if reader is None:
        variables = list(raws)
        reader = readers[key] = tf.function(
            lambda: [variable.value() for variable in variables], autograph=False
        )
    return reader


def to_numpy(values: Sequence[Any]) -> list[Any]:
    """A snapshot of :func:`read_variables` as numpy arrays (copies, as ``get_weights``)."""
    return [np.array(value) for value in values]
