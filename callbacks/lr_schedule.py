"""A per-step learning-rate schedule that sets the optimizer's rate before every step."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from trainkit.schedules import SCHEDULES, lr_table

_OPTIONS = {
    name
    for name, parameter in inspect.signature(lr_table).parameters.items()
    if parameter.kind is inspect.Parameter.KEYWORD_ONLY
}


class LRSchedule(keras.callbacks.Callback):
    """Sets the optimizer's learning rate at every training step from a schedule.

    ``schedule`` is one of ``constant``, ``step``, ``exponential``, ``polynomial``,
    ``warmup_cosine``, ``one_cycle``; the options and formulas are those of
    :func:`trainkit.schedules.lr_table` (``keras.optimizers.schedules`` math, fastai's one
    cycle). The whole run's table is built once at ``on_train_begin``; a batch hook then
    looks the rate up and assigns the optimizer's ``learning_rate`` variable only when the
    value changes.

    The step is ``epoch * steps_per_epoch + batch``, so ``initial_epoch`` and a resumed run
    land at the right place. With ``steps_per_execution = k`` Keras calls the batch hooks once
    per k steps with the index of the first step: the rate is set for that step and held for
    the k steps of the execution.

    Other callbacks may still change the rate between epochs (``ReduceLROnPlateau``,
    ``BackboneFinetuning``): at the first batch of each epoch the rate is read back once and a
    change from what this callback set becomes a factor applied to the rest of the schedule
    (saved by ``callbacks.backup.Backup``). A change made before this callback's first step of
    a ``fit`` is overwritten. With ``lr`` None the base rate is read from the optimizer at each
    ``fit``: a second ``fit`` of the same model starts from where the first left the rate. The
    optimizer must have a plain (variable) learning rate, not a ``LearningRateSchedule``.

    Logs: ``lr`` in the batch logs (begin and end) of every step and in the epoch logs (the
    rate of the epoch's last step). Attribute ``current_lr``.

    Hooks: ``on_train_begin``, ``on_epoch_begin``, ``on_train_batch_begin``,
    ``on_train_batch_end``, ``on_epoch_end``.

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

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        variable = self.model.optimizer.learning_rate
        if not isinstance(variable, keras.Variable):
            raise TypeError(
                "LRSchedule needs an optimizer with a plain learning rate, not a "
                f"{type(self.model.optimizer._learning_rate).__name__}"
            )
        self._variable = variable
        # The TensorFlow variable under Keras's: assigning it directly costs a quarter of
        # Keras's assign (about 25 instead of 90 µs), and this runs at every step.
        raw = getattr(variable, "value", None)
        if isinstance(raw, tf.Variable):
            self._assign = functools.partial(raw.assign, read_value=False)
        else:
            self._assign = variable.assign
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

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._offset = epoch * self._steps_per_epoch
        self._check_external = self.current_lr is not None

    def on_train_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        if self._check_external:
            self._adopt_external_change()
        step = self._offset + batch
        table = self._table
        value = (table[step] if step < len(table) else table[-1]) * self.scale
        if value != self.current_lr:
            self._assign(value)
            self.current_lr = value
        if logs is not None:
            logs["lr"] = value

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        if logs is not None:
            logs["lr"] = self.current_lr

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if logs is not None and self.current_lr is not None:
            logs["lr"] = self.current_lr

    def _adopt_external_change(self) -> None:
        # Runs once per epoch, after every callback's on_epoch_begin and the previous epoch's
        # on_epoch_end, so whoever changed the rate in between has done so.
        self._check_external = False
        actual = float(self._variable.numpy())
        expected = float(np.float32(self.current_lr))
        if actual != expected and expected > 0:
            self.scale *= actual / expected

    # -- resume support (callbacks.backup.Backup) ---------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {"scale": self.scale}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.scale = float(state.get("scale", 1.0))


def _is_sequence(value: Any) -> bool:
    # OmegaConf's ListConfig is a Sequence too.
    return isinstance(value, Sequence) and not isinstance(value, str | bytes)
