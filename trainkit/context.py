"""What the job shares with its callbacks: the run context, the job status and the protocols.

Callbacks receive a :class:`RunContext` through ``set_context(ctx)`` right after they are built
and before ``fit``. Plain Keras callbacks, which have no such method, are left alone. Nothing here
is global: two jobs in one process (a Hydra multirun) each get their own context.

The protocols at the end name what library callbacks already do, so that one callback can rely on
another by type (``isinstance(cb, Stateful)``) instead of probing attributes.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

if TYPE_CHECKING:
    from callbacks.base import StepClock

T = TypeVar("T")


class JobStatus(enum.StrEnum):
    """How a job ended; the value is MLflow's run status of the same name."""

    FINISHED = "FINISHED"
    FAILED = "FAILED"
    KILLED = "KILLED"

    @classmethod
    def of(cls, value: str | JobStatus) -> JobStatus:
        """``value`` as a status; anything unknown counts as FAILED."""
        try:
            return cls(value)
        except ValueError:
            return cls.FAILED


@dataclass(frozen=True)
class SplitSteps:
    """Batches per pass over each split, as the job runs them (``None``: not known)."""

    train: int | None = None
    val: int | None = None
    test: int | None = None
    predict: int | None = None

    def of_phase(self, phase: str) -> int | None:
        """Steps of a hook phase: ``train``, ``validation``, ``test`` or ``predict``."""
        return {
            "train": self.train,
            "validation": self.val,
            "val": self.val,
            "test": self.test,
            "predict": self.predict,
        }.get(phase)


@dataclass
class RunContext:
    """What a callback may need to know about the job it runs in.

    Attributes:
        run_dir: Hydra's run directory; callbacks write their files under it.
        config: the fully resolved job config as a plain dict (for params and artifacts).
        model_name: the registry name of the model (``alexnet``, ``clip_resnet50`` ...).
        stack: the name of the callback stack (``full``, ``default`` ...), or ``custom``.
        class_names: names of the dataset's classes, index = label.
        image_size: the (height, width) the model sees.
        batch_size: the global training batch size.
        tracking: the ``tracking`` config group (uri, experiment, ...) as a dict.
        train_data: one pass over the training split as a ``tf.data.Dataset`` of (images,
            labels), batched and augmented as training reads it (for callbacks that read
            training batches outside ``fit``: :class:`callbacks.precise_bn.PreciseBatchNorm`).
        test_data: the test split as a ``tf.data.Dataset`` of (images, labels), if any.
        test_labels: the test split's labels in order, if known.
        sample_images: a small batch of augmented training images (uint8-range floats).
        data_sizes: examples per split (``train``, ``val``, ``test``).
        steps: batches per pass over each split (:class:`SplitSteps`).
        callbacks: the job's callbacks in call order (set when the stack is built).
        clock: the stack's step clock (set when the stack is built); see
            :class:`callbacks.base.StepClock`.
        is_chief: whether this process writes logs, checkpoints and tracking (the chief of a
            multi-worker job, or the only process).
        strategy: the name of the ``tf.distribute`` strategy the model was built under.
        worker_index: this process's place among the workers of a multi-worker job (0: the
            chief, or the only process).
        precision: the dtype policy the job resolved (``float32``, ``mixed_bfloat16`` ...).
        sweep: for a job of a Hydra multirun: ``sweep_dir``, ``job_num``, ``overrides``.
        error: why the job failed, on one line (set by the job before ``on_job_end(FAILED)``;
            the MLflow run carries it as its ``trainkit.error`` tag); None otherwise.
        extras: scratch space for a job's own additions; no library callback reads it.
    """

    run_dir: Path
    config: dict[str, Any] = field(default_factory=dict)
    model_name: str = "model"
    stack: str = "custom"
    class_names: list[str] = field(default_factory=list)
    image_size: tuple[int, int] | None = None
    batch_size: int | None = None
    tracking: dict[str, Any] = field(default_factory=dict)
    train_data: Any = None
    test_data: Any = None
    test_labels: Any = None
    sample_images: Any = None
    data_sizes: dict[str, int] = field(default_factory=dict)
    steps: SplitSteps = field(default_factory=SplitSteps)
    callbacks: list[Any] = field(default_factory=list)
    clock: StepClock | None = None
    is_chief: bool = True
    strategy: str = "default"
    worker_index: int = 0
    precision: str | None = None
    sweep: dict[str, Any] | None = None
    error: str | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.run_dir = Path(self.run_dir)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def path(self, *parts: str) -> Path:
        """A path under the run directory, its parent folder created."""
        target = self.run_dir.joinpath(*parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    def find(self, cls: type[T]) -> T | None:
        """The first callback of the stack that is an instance of ``cls`` (a class or a
        runtime-checkable protocol), or None."""
        return next((cb for cb in self.callbacks if isinstance(cb, cls)), None)

    def find_all(self, cls: type[T]) -> list[T]:
        """Every callback of the stack that is an instance of ``cls``, in call order."""
        return [cb for cb in self.callbacks if isinstance(cb, cls)]

    @property
    def system_keys(self) -> frozenset[str]:
        """The log keys the stack's callbacks declare as measuring the machine, not the model
        (``system_keys`` of :class:`callbacks.base.TrainkitCallback`; any callback may declare
        them)."""
        keys: set[str] = set()
        for cb in self.callbacks:
            keys.update(getattr(cb, "system_keys", ()))
        return frozenset(keys)


# -- what callbacks promise each other ------------------------------------------------------


@runtime_checkable
class Stateful(Protocol):
    """A callback whose state a backup saves and a resume restores (``callbacks.backup``)."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@runtime_checkable
class StopsTraining(Protocol):
    """A callback that may end ``fit`` early and says why (``None`` while it has not)."""

    stop_reason: str | None


@runtime_checkable
class ShowsProgress(Protocol):
    """A callback that draws progress itself, so the job turns Keras's progress bar off."""

    replaces_keras_progress: bool


@runtime_checkable
class JobAware(Protocol):
    """A callback that is told how the job ended, once, after fit, evaluate and predict.

    ``on_job_end`` must not raise: writers flush and close there, and the MLflow run ends with
    the status.
    """

    def on_job_end(self, status: JobStatus) -> None: ...


@runtime_checkable
class LogsObserver(Protocol):
    """A callback that records logs after the whole stack has run a hook.

    The stack calls ``after_stack(hook, index, logs)`` after every callback's
    ``on_train_batch_end``, ``on_epoch_end``, ``on_test_end`` and ``on_train_end``, with the
    logs as the last callback left them: keys that callbacks placed after the recorder wrote
    are in them. ``index`` is the batch or epoch index, None for ``on_test_end`` and
    ``on_train_end``. One that sets ``after_stack_batches = False`` is not called after
    ``on_train_batch_end`` (it reads the batch logs it kept a reference to later).
    """

    def after_stack(self, hook: str, index: int | None, logs: dict[str, Any]) -> None: ...


@runtime_checkable
class TakesStepRows(Protocol):
    """A recorder that takes every step's metrics when Keras runs several steps per call
    (``steps_per_execution = k > 1``, :mod:`trainkit.step_rows`).

    Keras calls the batch hooks once per execution, at its last step. Before that call the stack
    calls ``on_train_steps(steps, rows)`` with the execution's earlier steps: their global step
    numbers (``range``) and, for each, the model's metrics after that step (``{name: float}``).
    The batch hook then brings the last step as usual. Only recorders take rows: the weights at
    those steps are gone, so nothing that acts on the model may see them.
    """

    def on_train_steps(self, steps: range, rows: list[dict[str, float]]) -> None: ...


@runtime_checkable
class BuffersTracking(Protocol):
    """A callback that holds tracking points in memory for a background writer.

    ``hand_over_tracking()``, called on the training thread, gives what it holds to its writer
    without waiting and returns ``wait(timeout) -> bool``, which any thread may call to wait
    until those points are written (True when they are). A backup hands over when it takes its
    snapshot and waits on its own writer thread before committing, so a job killed after the
    commit lost no point, and the training thread never waits for a store.
    """

    def hand_over_tracking(self) -> Callable[[float], bool]: ...


@runtime_checkable
class TracksRun(Protocol):
    """A callback that records the job in a tracking run (``callbacks.mlflow``): ``run`` is its
    ``TrackedRun`` (None before ``on_train_begin``), ``model_uri`` the logged model's."""

    run: Any
    model_uri: str | None


@runtime_checkable
class BestCheckpoint(Protocol):
    """A callback that keeps the best model on disk (``callbacks.checkpoint``)."""

    best_model_path: str | None
