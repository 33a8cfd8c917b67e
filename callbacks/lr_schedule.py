"""A per-step learning-rate schedule that sets the optimizer's rate before every step."""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from callbacks.base import TrainkitCallback
from trainkit.schedules import SCHEDULES, lr_table
from trainkit.train_function import remake_train_function

_OPTIONS = {
    name
    for name, parameter in inspect.signature(lr_table).parameters.items()
    if parameter.kind is inspect.Parameter.KEYWORD_ONLY
}


class LRSchedule(TrainkitCallback):
    """Sets the optimizer's learning rate at every training step from a schedule.

    ``schedule`` is one of ``constant``, ``step``, ``exponential``, ``polynomial``,
    ``warmup_cosine``, ``one_cycle``; the options and formulas are those of
    :func:`trainkit.schedules.lr_table` (``keras.optimizers.schedules`` math, fastai's one
    cycle). The whole run's table is built once at ``on_train_begin`` and handed to the
    compiled train step: the optimizer's ``apply`` first sets its ``learning_rate`` variable to
    the table's value at the step, inside the graph (:class:`InGraphRate`). The training thread
    assigns nothing per step; a host assignment (an eager op) cost 110-130 us a step on the
    fast-step benchmark model, more than a tenth of its step.

    The step is ``epoch * steps_per_epoch + batch`` (plus, in an epoch resumed in its middle by
    the job, the steps done before the stop, from the stack's clock), so ``initial_epoch`` and a
    resumed run land at the right place: at the first batch of each epoch the graph's step is
    lined up with it once (one read of the optimizer's step count). With ``steps_per_execution =
    k`` every step of an execution gets its own rate, as with ``k = 1``.

    Other callbacks may still change the rate between epochs (``ReduceLROnPlateau``,
    ``BackboneFinetuning``): at the first batch of each epoch the rate is read back once and a
    change from what this callback set becomes a factor applied to the rest of the schedule
    (saved by ``callbacks.backup.Backup``). A change made before this callback's first step of
    a ``fit`` is overwritten. With ``lr`` None the base rate is read from the optimizer at each
    ``fit``: a second ``fit`` of the same model starts from where the first left the rate. The
    optimizer must have a plain (variable) learning rate, not a ``LearningRateSchedule``.

    Logs: ``lr`` in the batch logs (begin: the step's rate; end: the rate of the execution's
    last step) and in the epoch logs (the rate of the epoch's last step). Attribute
    ``current_lr``.

    Hooks: ``on_train_begin``, ``on_epoch_begin``, ``on_train_batch_begin``,
    ``on_train_batch_end``, ``on_epoch_end``, ``on_train_end``; ``on_job_end`` in a job.

    Args:
        schedule: the schedule's name.
        lr: the base (peak) rate; None takes the optimizer's rate at ``on_train_begin``.
        total_steps: the schedule's length; None is ``epochs * steps_per_epoch``. Steps past
            it keep the last value.
        steps_per_epoch: needed only when Keras cannot tell the dataset's length.
        **options: the schedule's options, see :func:`trainkit.schedules.lr_table`
            (``milestones``, ``gamma``, ``decay_rate``, ``decay_epochs``, ``staircase``,
            ``end_lr``, ``power``, ``warmup_epochs``, ``warmup_steps``, ``warmup_start_lr``,
            ``alpha``, ``pct_start``, ``div``, ``final_div``).

    Example::

        LRSchedule("warmup_cosine", lr=1e-3, warmup_epochs=1, alpha=0.01)
        # conf/callbacks/<stack>.yaml:
        #   lr_schedule: {_target_: callbacks.lr_schedule.LRSchedule,
        #                 schedule: one_cycle, lr: 0.003, pct_start: 0.25}
    """

    uses_clock = True

    def __init__(
        self,
        schedule: str = "constant",
        lr: float | None = None,
        total_steps: int | None = None,
        steps_per_epoch: int | None = None,
        **options: Any,
    ) -> None:
        super().__init__()
        if schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {schedule!r}: choose one of {', '.join(SCHEDULES)}")
        unknown = set(options) - _OPTIONS
        if unknown:
            raise TypeError(f"unknown LRSchedule options: {', '.join(sorted(unknown))}")
        self.schedule = schedule
        self.lr = lr
        self.total_steps = total_steps
        self.steps_per_epoch = steps_per_epoch
        # Hydra hands lists over as ListConfig: make them plain.
        self.options = {k: list(v) if _is_sequence(v) else v for k, v in options.items()}
        self.scale = 1.0
        self.current_lr: float | None = None
        self._rate: InGraphRate | None = None

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        optimizer = self.model.optimizer
        variable = optimizer.learning_rate
        if not isinstance(variable, keras.Variable):
            raise TypeError(
                "LRSchedule needs an optimizer with a plain learning rate, not a "
                f"{type(optimizer._learning_rate).__name__}"
            )
        self._variable = variable
        steps = self.steps_per_epoch or self.params.get("steps")
        if not steps:
            raise ValueError(
                "LRSchedule cannot tell the number of steps per epoch: pass steps_per_epoch"
            )
        self._steps_per_epoch = int(steps)
        base = float(self.lr) if self.lr is not None else float(variable.numpy())
        total = self.total_steps or int(self.params.get("epochs") or 1) * self._steps_per_epoch
        table = lr_table(self.schedule, base, int(total), self._steps_per_epoch, **self.options)
        # A python list: indexing it in the batch hook is cheaper than numpy scalar access.
        self._table: list[float] = table.tolist()
        self.scale = 1.0
        self.current_lr = None
        self._check_external = False
        self._rate = InGraphRate.of(optimizer)
        self._rate.set_table(table)
        self._rate.install(self.model)
        self._line_up = True

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        # An exactly resumed epoch's first batch hook is its step ``steps_in_epoch`` (the
        # clock's count of the steps done before the stop), not 0.
        self._offset = epoch * self._steps_per_epoch + self.clock.steps_in_epoch
        self._check_external = self.current_lr is not None
        self._line_up = True

    def on_train_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        step = self._offset + batch
        if self._line_up:
            self._line_up_with(step)
        table = self._table
        value = (table[step] if step < len(table) else table[-1]) * self.scale
        if logs is not None:
            logs["lr"] = value

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        if not logs:
            # A batch that did not train (the dropped steps of a resumed epoch in a plain fit):
            # the optimizer's step count did not move, so the next step lines up again.
            self._line_up = True
            return
        step = self._offset + batch  # the execution's last step
        table = self._table
        self.current_lr = (table[step] if step < len(table) else table[-1]) * self.scale
        logs["lr"] = self.current_lr

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if logs is not None and self.current_lr is not None:
            logs["lr"] = self.current_lr

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        self.release()

    def on_job_end(self, status: str) -> None:
        self.release()  # a fit cut short by an exception never reached on_train_end

    def release(self) -> None:
        """Give the optimizer its own ``apply`` back, so a later ``fit`` without this callback
        trains at the variable's rate. Done at ``on_train_end`` and, in a job, at its end; after
        a plain ``fit`` cut short by an exception, call it yourself."""
        if self._rate is not None and self.model is not None:
            self._rate.remove(self.model)

    def _line_up_with(self, step: int) -> None:
        # Once an epoch, after every callback's on_epoch_begin and the previous epoch's
        # on_epoch_end, so whoever changed the rate in between has done so.
        self._line_up = False
        if self._check_external:
            self._check_external = False
            actual = float(self._variable.numpy())
            expected = float(np.float32(self.current_lr))
            if actual != expected and expected > 0:
                self.scale *= actual / expected
        assert self._rate is not None
        self._rate.line_up(step, self.scale)

    # -- resume support (callbacks.backup.Backup) ---------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {"scale": self.scale}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.scale = float(state.get("scale", 1.0))


class InGraphRate:
    """An optimizer whose ``apply`` sets its learning-rate variable from a table first.

    ``apply`` runs inside the compiled train step, so the rate of each step is computed in the
    graph: ``table[min(iterations + shift, len - 1)] * scale``, three plain variables read per
    step. The host writes them rarely: the table once a fit, ``shift`` and ``scale`` once an
    epoch (:meth:`line_up`). The learning rate stays the optimizer's own variable (saved,
    restored and changed by other callbacks as before); the step writes it, as Keras's
    optimizer writes its step count, which has the same per-replica aggregation.
    """

    @classmethod
    def of(cls, optimizer: Any) -> InGraphRate:
        """The optimizer's one instance: a second never wraps ``apply`` twice."""
        rate = getattr(optimizer, "_trainkit_rate", None)
        if rate is None:
            rate = cls(optimizer)
            object.__setattr__(optimizer, "_trainkit_rate", rate)  # not tracked for saving
        return rate

    def __init__(self, optimizer: Any) -> None:
        self.optimizer = optimizer
        # Plain variables, outside the strategy's scope (as trainkit.step_rows's): every
        # replica reads them, none writes them.
        with tf.init_scope():
            self.table = tf.Variable(
                tf.zeros([1], tf.float32),
                shape=tf.TensorShape([None]),
                trainable=False,
                name="trainkit_lr_table",
            )
            self.shift = tf.Variable(
                tf.constant(0, tf.int64), trainable=False, name="trainkit_lr_shift"
            )
            self.scale = tf.Variable(1.0, trainable=False, name="trainkit_lr_scale")
        self._installed = False

    def set_table(self, table: np.ndarray) -> None:
        self.table.assign(np.asarray(table, np.float32))

    def line_up(self, step: int, scale: float) -> None:
        """The coming step is the table's ``step``; the table is multiplied by ``scale``."""
        done = int(self.optimizer.iterations.numpy())
        self.shift.assign(step - done)
        self.scale.assign(scale)

    def install(self, model: Any) -> None:
        """Wrap the optimizer's ``apply``; the train function is traced again at its next call."""
        if self._installed:
            return
        optimizer, original = self.optimizer, self.optimizer.apply

        def apply(grads: Any, trainable_variables: Any = None) -> Any:
            last = tf.size(self.table, out_type=tf.int64) - 1
            index = tf.minimum(tf.cast(optimizer.iterations, tf.int64) + self.shift, last)
            index = tf.maximum(index, 0)
            optimizer.learning_rate.assign(tf.gather(self.table, index) * self.scale)
            return original(grads, trainable_variables)

        optimizer.apply = apply
        self._installed = True
        remake_train_function(model)

    def remove(self, model: Any) -> None:
        """Give the optimizer its own ``apply`` back; the next fit traces a plain step."""
        if not self._installed:
            return
        with contextlib.suppress(AttributeError):
            del self.optimizer.apply  # the instance's wrapper: the class's method shows again
        self._installed = False
        remake_train_function(model)


def _is_sequence(value: Any) -> bool:
    # OmegaConf's ListConfig is a Sequence too.
    return isinstance(value, Sequence) and not isinstance(value, str | bytes)
