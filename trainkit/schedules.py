"""Learning-rate schedules as per-step tables.

:func:`lr_table` turns a schedule name and its options into a numpy array holding the learning
rate of every optimizer step of a run. The math comes from ``keras.optimizers.schedules`` where
Keras has it (evaluated once, vectorised, when the table is built) and from fastai's
``fit_one_cycle`` for ``one_cycle``. A callback then only indexes the table at each batch, which
keeps the per-step cost to a python list lookup.

Options given in epochs (``milestones``, ``decay_epochs``, ``warmup_epochs``) are converted with
``steps_per_epoch``; fractions of an epoch are allowed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import keras
import numpy as np

SCHEDULES = ("constant", "step", "exponential", "polynomial", "warmup_cosine", "one_cycle")


def lr_table(
    schedule: str,
    lr: float,
    total_steps: int,
    steps_per_epoch: int,
    *,
    milestones: Sequence[float] = (),
    gamma: float = 0.1,
    decay_rate: float = 0.96,
    decay_epochs: float = 1.0,
    staircase: bool = False,
    end_lr: float = 0.0,
    power: float = 1.0,
    warmup_epochs: float = 0.0,
    warmup_steps: int | None = None,
    warmup_start_lr: float = 0.0,
    alpha: float = 0.0,
    pct_start: float = 0.25,
    div: float = 25.0,
    final_div: float = 1e4,
) -> np.ndarray:
    """The learning rate of each step ``0 .. total_steps - 1`` (float64 array).

    Args:
        schedule: one of :data:`SCHEDULES`.
        lr: the base rate; the peak for ``warmup_cosine`` and ``one_cycle``.
        total_steps: the run's number of optimizer steps (``epochs * steps_per_epoch``).
        steps_per_epoch: converts the options given in epochs into steps.
        milestones: ``step``: epochs at which the rate is multiplied by ``gamma``.
        gamma: ``step``: the factor applied at each milestone.
        decay_rate: ``exponential``: the factor applied every ``decay_epochs``
            (``lr * decay_rate ** (step / decay_steps)``).
        decay_epochs: ``exponential``: the decay period, in epochs.
        staircase: ``exponential``: decay in whole periods instead of continuously.
        end_lr: ``polynomial``: the rate reached at the last step.
        power: ``polynomial``: the polynomial's power (1 is linear).
        warmup_epochs: ``warmup_cosine``: length of the linear warmup, in epochs.
        warmup_steps: ``warmup_cosine``: the same in steps; takes precedence when given.
        warmup_start_lr: ``warmup_cosine``: the rate at step 0.
        alpha: ``warmup_cosine``: the final rate as a fraction of ``lr``.
        pct_start: ``one_cycle``: the fraction of the run spent warming up.
        div: ``one_cycle``: the start rate is ``lr / div``.
        final_div: ``one_cycle``: the final rate is ``lr / (div * final_div)`` (PyTorch's
            ``OneCycleLR`` naming; fastai's ``div_final`` equals ``div * final_div``).
    """
    if total_steps < 1:
        raise ValueError(f"total_steps must be at least 1, got {total_steps}")
    steps = np.arange(total_steps, dtype=np.float64)
    spe = max(int(steps_per_epoch), 1)
    schedules = keras.optimizers.schedules
    if schedule == "constant":
        return np.full(total_steps, float(lr))
    if schedule == "step":
        boundaries = [round(float(m) * spe) for m in milestones]
        if not boundaries:
            return np.full(total_steps, float(lr))
        if boundaries != sorted(boundaries):
            raise ValueError(f"milestones must increase, got {list(milestones)}")
        values = [float(lr) * float(gamma) ** i for i in range(len(boundaries) + 1)]
        # PiecewiseConstantDecay switches *after* a boundary: step b still gets the old value;
        # a milestone at epoch m should act from the first step of epoch m.
        fn = schedules.PiecewiseConstantDecay([b - 1 for b in boundaries], values)
        return _evaluate(fn, steps)
    if schedule == "exponential":
        decay_steps = max(float(decay_epochs) * spe, 1.0)
        fn = schedules.ExponentialDecay(float(lr), decay_steps, float(decay_rate), staircase)
        return _evaluate(fn, steps)
    if schedule == "polynomial":
        fn = schedules.PolynomialDecay(
            float(lr), max(total_steps - 1, 1), float(end_lr), power=float(power)
        )
        return _evaluate(fn, steps)
    if schedule == "warmup_cosine":
        warmup = int(warmup_steps) if warmup_steps is not None else round(warmup_epochs * spe)
        warmup = min(max(warmup, 0), total_steps - 1)
        fn = schedules.CosineDecay(
            initial_learning_rate=float(warmup_start_lr),
            decay_steps=max(total_steps - 1 - warmup, 1),
            alpha=float(alpha),
            warmup_target=float(lr),
            warmup_steps=warmup,
        )
        return _evaluate(fn, steps)
    if schedule == "one_cycle":
        return one_cycle(steps, total_steps, float(lr), pct_start, div, final_div)
    raise ValueError(f"unknown schedule {schedule!r}: choose one of {', '.join(SCHEDULES)}")


def one_cycle(
    steps: np.ndarray,
    total_steps: int,
    max_lr: float,
    pct_start: float = 0.25,
    div: float = 25.0,
    final_div: float = 1e4,
) -> np.ndarray:
    """fastai's one-cycle: cosine from ``max_lr/div`` up to ``max_lr`` over the first
    ``pct_start`` of the run, then cosine down to ``max_lr/(div*final_div)``."""
    start, end = max_lr / div, max_lr / (div * final_div)
    last = max(total_steps - 1, 1)
    pos = np.clip(steps / last, 0.0, 1.0)
    pct_start = min(max(float(pct_start), 0.0), 1.0)
    warm = np.minimum(pos / pct_start, 1.0) if pct_start > 0 else np.ones_like(pos)
    if pct_start < 1:
        anneal = np.clip((pos - pct_start) / (1.0 - pct_start), 0.0, 1.0)
    else:
        anneal = np.zeros_like(pos)
    up = _cos_between(start, max_lr, warm)
    down = _cos_between(max_lr, end, anneal)
    return np.where(pos <= pct_start, up, down)


def _cos_between(start: float, end: float, pos: np.ndarray) -> np.ndarray:
    """fastai's ``SchedCos``: a half cosine from ``start`` (pos 0) to ``end`` (pos 1)."""
    return start + (1.0 + np.cos(math.pi * (1.0 - pos))) * (end - start) / 2.0


def _evaluate(fn: keras.optimizers.schedules.LearningRateSchedule, steps: np.ndarray) -> np.ndarray:
    # One vectorised call instead of one eager call per step: a 100k-step table takes well
    # under a second, while per-step calls would cost tens of microseconds each in the loop.
    values = keras.ops.vectorized_map(fn, keras.ops.convert_to_tensor(steps, dtype="float32"))
    return np.asarray(keras.ops.convert_to_numpy(values), dtype=np.float64)
