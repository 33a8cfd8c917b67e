"""LRSchedule sets the rate its formula gives at every step; ReduceLROnPlateau composes."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest

from callbacks.lr_schedule import LRSchedule
from callbacks.reduce_lr_on_plateau import ReduceLROnPlateau
from tests.callbacks.cb_testing import (
    ModelPool,
    Recorder,
    Script,
    batches,
    make_model,
    regression_data,
)

EPOCHS, STEPS = 3, 4  # 32 samples, batch 8
TOTAL = EPOCHS * STEPS
LR = 0.1


# The formulas, written out independently of keras.optimizers.schedules.
def constant(s):
    return LR


def step(s):
    return LR * 0.5 ** sum(s >= m * STEPS for m in (1, 2))


def exponential(s):
    return LR * 0.5 ** (s / STEPS)


def polynomial(s):
    return (LR - 0.01) * (1 - s / (TOTAL - 1)) ** 2 + 0.01


def warmup_cosine(s):
    warmup, decay = 3, TOTAL - 1 - 3
    if s < warmup:
        return LR * s / warmup
    return LR * ((1 - 0.1) * 0.5 * (1 + math.cos(math.pi * (s - warmup) / decay)) + 0.1)


def one_cycle(s):
    start, end, pos = LR / 25, LR / (25 * 1e4), s / (TOTAL - 1)

    def cos(a, b, p):
        return a + (1 + math.cos(math.pi * (1 - p))) * (b - a) / 2

    return cos(start, LR, pos / 0.3) if pos <= 0.3 else cos(LR, end, (pos - 0.3) / 0.7)


CASES = {
    "constant": ({}, constant),
    "step": ({"milestones": [1, 2], "gamma": 0.5}, step),
    "exponential": ({"decay_rate": 0.5, "decay_epochs": 1}, exponential),
    "polynomial": ({"end_lr": 0.01, "power": 2.0}, polynomial),
    "warmup_cosine": ({"warmup_steps": 3, "alpha": 0.1}, warmup_cosine),
    "one_cycle": ({"pct_start": 0.3, "div": 25, "final_div": 1e4}, one_cycle),
}


# One model per initial rate, reset before each fit (the rate variable included); fresh ones
# under steps_per_execution. The data as a dataset of 4 batches of 8.
MODELS = ModelPool()
DATA = batches(*regression_data(32))


def fit(callbacks, steps_per_execution=1, epochs=EPOCHS, lr=0.5):
    if steps_per_execution == 1:
        model = MODELS.get(lr=lr)
    else:
        model = make_model(lr=lr, steps_per_execution=steps_per_execution)
    history = model.fit(DATA, epochs=epochs, shuffle=False, verbose=0, callbacks=callbacks)
    return model, history


@pytest.mark.parametrize("name", list(CASES))
def test_each_schedule_follows_its_formula_at_every_step(name):
    options, formula = CASES[name]
    schedule = LRSchedule(name, lr=LR, **options)
    recorder = Recorder(lr=True)
    fit([schedule, recorder])
    steps = [epoch * STEPS + batch for epoch, batch, _ in recorder.batch_begin]
    assert steps == list(range(TOTAL))
    expected = np.array([formula(s) for s in steps])
    # what the optimizer variable holds (float32) once the step has run: the step set it
    np.testing.assert_allclose(recorder.step_lr, expected, rtol=1e-5, atol=1e-9)
    # what the callback wrote into the batch logs, begin and end
    np.testing.assert_allclose([logs["lr"] for *_, logs in recorder.batch_begin], expected, 1e-5)
    np.testing.assert_allclose([logs["lr"] for *_, logs in recorder.batch_end], expected, 1e-5)
    # the epoch logs carry the rate of each epoch's last step
    epoch_lrs = [logs["lr"] for logs in recorder.epoch_logs]
    np.testing.assert_allclose(epoch_lrs, expected[STEPS - 1 :: STEPS], rtol=1e-5)


def keras_schedule_weights(steps_per_execution: int) -> list[np.ndarray]:
    """The model trained with the same rates by Keras's own in-graph schedule."""
    model = make_model(lr=LR, steps_per_execution=steps_per_execution)
    rate = keras.optimizers.schedules.ExponentialDecay(LR, decay_steps=STEPS, decay_rate=0.5)
    model.compile(keras.optimizers.SGD(rate), "mse", steps_per_execution=steps_per_execution)
    model.fit(DATA, epochs=EPOCHS, shuffle=False, verbose=0)
    return model.get_weights()


@pytest.mark.parametrize("steps_per_execution", [1, 2])
def test_the_steps_train_with_the_schedules_rates(steps_per_execution):
    """The outcome: the weights equal those of Keras's ExponentialDecay schedule, so every
    step trained with its own rate, inside an execution of two steps too."""
    schedule = LRSchedule("exponential", lr=LR, decay_rate=0.5, decay_epochs=1)
    model = make_model(lr=LR, steps_per_execution=steps_per_execution)
    model.fit(DATA, epochs=EPOCHS, shuffle=False, verbose=0, callbacks=[schedule])
    for got, want in zip(
        model.get_weights(), keras_schedule_weights(steps_per_execution), strict=True
    ):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    # and not by chance: a constant rate trains another model
    other = make_model(lr=LR, steps_per_execution=steps_per_execution)
    other.fit(DATA, epochs=EPOCHS, shuffle=False, verbose=0, callbacks=[LRSchedule("constant")])
    assert any(
        not np.allclose(a, b, rtol=1e-5, atol=1e-7)
        for a, b in zip(other.get_weights(), model.get_weights(), strict=True)
    )


def test_default_lr_is_the_optimizers_and_hydra_lists_are_accepted():
    from omegaconf import OmegaConf

    milestones = OmegaConf.create({"m": [2]}).m  # what Hydra passes without _convert_
    schedule = LRSchedule("step", milestones=milestones, gamma=0.1)
    recorder = Recorder(lr=True)
    fit([schedule, recorder], lr=0.5)
    assert recorder.step_lr[0] == pytest.approx(0.5)
    assert recorder.step_lr[2 * STEPS] == pytest.approx(0.05)


def test_steps_per_execution_gives_each_step_its_rate():
    schedule = LRSchedule("exponential", lr=LR, decay_rate=0.5, decay_epochs=1)
    recorder = Recorder(lr=True)
    fit([schedule, recorder], steps_per_execution=2)
    begins = [(epoch, batch) for epoch, batch, _ in recorder.batch_begin]
    assert begins == [(e, b) for e in range(EPOCHS) for b in (0, 2)]
    # after an execution the variable holds its last step's rate, which the logs say too
    expected = [exponential(e * STEPS + b + 1) for e, b in begins]
    np.testing.assert_allclose(recorder.step_lr, expected, rtol=1e-5)
    np.testing.assert_allclose([logs["lr"] for *_, logs in recorder.batch_end], expected, 1e-5)


class HalveAtEpochEnd(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 0:
            rate = self.model.optimizer.learning_rate
            rate.assign(float(rate.numpy()) / 2)


def test_a_rate_change_by_another_callback_becomes_a_factor_on_the_schedule():
    schedule = LRSchedule("exponential", lr=LR, decay_rate=0.5, decay_epochs=1)
    recorder = Recorder(lr=True)
    fit([schedule, HalveAtEpochEnd(), recorder])
    expected = [exponential(s) * (1 if s < STEPS else 0.5) for s in range(TOTAL)]
    np.testing.assert_allclose(recorder.step_lr, expected, rtol=1e-5)
    assert schedule.state_dict() == {"scale": pytest.approx(0.5)}


def test_schedule_objects_are_refused():
    x, y = regression_data(16)
    model = make_model()  # fresh: compiled again below
    model.compile(keras.optimizers.SGD(keras.optimizers.schedules.ExponentialDecay(0.1, 10, 0.9)))
    with pytest.raises(TypeError, match="plain learning rate"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[LRSchedule("constant")])


def test_reduce_lr_on_plateau_reduces_and_logs_lr():
    reducer = ReduceLROnPlateau(patience=1, factor=0.5, min_delta=0.0, verbose=0)
    recorder = Recorder(lr=True)
    # best at epoch 0; epoch 1 no improvement -> reduce; epoch 2 improves; epoch 3 not -> reduce
    values = [1.0, 1.0, 0.5, 0.6]
    fit([Script("val_loss", values), reducer, recorder], epochs=4, lr=0.4)
    assert recorder.epoch_begin_lr == pytest.approx([0.4, 0.4, 0.2, 0.2])
    # logs carry the rate used during the epoch (before the reduction): under Keras's own key,
    # as keras.callbacks.ReduceLROnPlateau writes it, and under trainkit's ``lr`` beside it
    assert [logs["lr"] for logs in recorder.epoch_logs] == pytest.approx([0.4, 0.4, 0.2, 0.2])
    assert [logs["learning_rate"] for logs in recorder.epoch_logs] == pytest.approx(
        [0.4, 0.4, 0.2, 0.2]
    )
    assert reducer.current_lr == pytest.approx(0.1)
