"""Backup: an interrupted fit, rerun in the same run directory, resumes where it was saved."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from callbacks.backbone_finetuning import BackboneFinetuning
from callbacks.backup import Backup
from callbacks.early_stopping import EarlyStopping
from callbacks.lr_schedule import LRSchedule
from tests.callbacks.cb_testing import (
    Interrupted,
    ModelPool,
    RaiseAt,
    Recorder,
    Script,
    assert_weights_equal,
    batches,
    make_model,
    regression_data,
    weights_differ,
)
from trainkit.context import JobStatus, RunContext
from trainkit.stack import build_stack

STEPS = 4  # 32 samples, batch 8
DATA = batches(*regression_data(32))
# A job process has a new model; here one per seed, reset before each fit (what a backup
# restores, weights and optimizer, is all put back first), and a fresh one under
# steps_per_execution.
MODELS = ModelPool()


def job(run_dir, callbacks, seed, epochs=4, steps_per_execution=1):
    """What the job does: context with the callback list, then fit (on a dataset, as the job)."""
    if steps_per_execution == 1:
        model = MODELS.get(optimizer="adam", seed=seed)
    else:
        model = make_model(optimizer="adam", seed=seed, steps_per_execution=steps_per_execution)
    stack = build_stack(callbacks, RunContext(run_dir=run_dir), model)
    try:
        model.fit(DATA, epochs=epochs, shuffle=False, callbacks=stack.for_fit(epochs, STEPS))
    except Exception:
        stack.end_job(JobStatus.FAILED)  # as the job does: the backup's commits are finished
        raise
    return model


class StateAt(keras.callbacks.Callback):
    """Captures weights, iteration count (and a callback's state) when a fit first reaches
    ``batch`` of its first epoch, i.e. after every on_train_begin and on_epoch_begin."""

    def __init__(self, batch=0, watched=None):
        super().__init__()
        self.batch = batch
        self.watched = watched
        self.weights = None

    def on_train_batch_begin(self, batch, logs=None):
        if self.weights is None and batch == self.batch:
            self.weights = self.model.get_weights()
            self.iterations = int(self.model.optimizer.iterations.numpy())
            self.optimizer = [v.numpy() for v in self.model.optimizer.variables]
            self.state = self.watched.state_dict() if self.watched is not None else None


def test_resumes_at_the_next_epoch_with_weights_optimizer_and_callback_states(tmp_path):
    val_loss = [1.0, 0.5, 0.7, 0.6]
    first = Recorder(weights=True)
    stopper = EarlyStopping(patience=3, verbose=0)
    with pytest.raises(Interrupted):
        job(tmp_path, [Script("val_loss", val_loss), stopper, first, RaiseAt(2), Backup()], 0)
    saved = json.loads((tmp_path / "backup" / "latest.json").read_text())
    assert (saved["epoch"], saved["step"], saved["global_step"]) == (2, 0, 2 * STEPS)
    assert saved["callbacks"]["EarlyStopping"] == {"wait": 0, "best": 0.5, "best_epoch": 1}

    second = Recorder()
    resumed_stopper = EarlyStopping(patience=3, verbose=0)
    at_start = StateAt(watched=resumed_stopper)
    # a different initialization: everything must come from the backup
    callbacks = [Script("val_loss", val_loss), resumed_stopper, at_start, second, Backup()]
    model = job(tmp_path, callbacks, seed=1)
    assert second.epochs == [2, 3]
    assert_weights_equal(at_start.weights, first.epoch_weights[1])
    assert at_start.iterations == 2 * STEPS
    assert_weights_equal(at_start.optimizer, first.epoch_optimizer[1])  # Adam's slots too
    assert at_start.state == {"wait": 0, "best": 0.5, "best_epoch": 1}
    assert resumed_stopper.wait == 2  # epochs 3 and 4 did not beat epoch 2's 0.5
    assert int(model.optimizer.iterations.numpy()) == 4 * STEPS
    final = json.loads((tmp_path / "backup" / "latest.json").read_text())
    assert final["finished"] and (final["epoch"], final["step"]) == (4, 0)
    # one weights file at a time
    assert len(list((tmp_path / "backup").glob("state-*.npz"))) == 1


def test_resumes_mid_epoch_at_the_saved_step(tmp_path):
    first = Recorder(batch_weights=True)

    # saves every 2 steps; interrupted before batch 3 of the second epoch: the last save is
    # global step 6 = epoch 1 (0-based), 2 steps in
    def schedule():
        return LRSchedule("exponential", lr=0.01, decay_rate=0.5, decay_epochs=1)

    with pytest.raises(Interrupted):
        job(tmp_path, [schedule(), first, RaiseAt(1, batch=3), Backup(save_every_n_steps=2)], 0)
    saved = json.loads((tmp_path / "backup" / "latest.json").read_text())
    assert (saved["epoch"], saved["step"], saved["global_step"]) == (1, 2, 6)

    second = Recorder(lr=True)
    at_batch_2 = StateAt(batch=2)
    callbacks = [schedule(), second, at_batch_2, Backup(save_every_n_steps=2, verbose=0)]
    model = job(tmp_path, callbacks, seed=1, epochs=2)
    assert second.epochs == [1]
    # the first two steps of the resumed epoch were skipped: no training, empty logs
    assert [(batch, "loss" in logs) for _, batch, logs in second.batch_end] == [
        (0, False),
        (1, False),
        (2, True),
        (3, True),
    ]
    # the first step that trained started from the weights saved at global step 6
    assert_weights_equal(at_batch_2.weights, first.batch_weights[5])
    assert at_batch_2.iterations == 6
    # the schedule continues at global step 6: the step trained with its rate
    assert second.step_lr[2] == pytest.approx(0.01 * 0.5 ** (6 / STEPS))
    assert int(model.optimizer.iterations.numpy()) == 2 * STEPS
    assert weights_differ(model.get_weights(), first.batch_weights[5])


def test_a_finished_early_stopped_training_is_not_continued(tmp_path):
    stopper = EarlyStopping(patience=1, verbose=0)
    job(tmp_path, [Script("val_loss", [1.0, 2.0, 3.0, 4.0]), stopper, Backup()], 0)
    assert stopper.stopped_epoch == 1
    saved = json.loads((tmp_path / "backup" / "latest.json").read_text())
    assert saved["finished"] and saved["stopped_early"]
    recorder = Recorder()
    job(tmp_path, [recorder, Backup(verbose=0)], 1)
    assert recorder.epochs == []


def test_delete_on_success_removes_the_backup_only_when_the_job_finished(tmp_path):
    backup = Backup(delete_on_success=True, verbose=0)
    with pytest.raises(Interrupted):
        job(tmp_path, [RaiseAt(1), backup], 0)
    backup.on_job_end("FAILED")
    assert (tmp_path / "backup" / "latest.json").exists()
    backup = Backup(delete_on_success=True, verbose=0)
    job(tmp_path, [backup], 0, epochs=2)
    backup.on_job_end("FINISHED")
    assert not (tmp_path / "backup").exists()


@pytest.mark.slow
def test_mid_epoch_resume_with_steps_per_execution(tmp_path):
    first = Recorder(batch_weights=True)
    with pytest.raises(Interrupted):
        job(
            tmp_path,
            [first, RaiseAt(1, batch=2), Backup(save_every_n_steps=2)],
            0,
            steps_per_execution=2,
        )
    saved = json.loads((tmp_path / "backup" / "latest.json").read_text())
    assert (saved["epoch"], saved["step"]) == (1, 2)

    second = Recorder()
    at_batch_2 = StateAt(batch=2)
    callbacks = [second, at_batch_2, Backup(save_every_n_steps=2, verbose=0)]
    model = job(tmp_path, callbacks, seed=1, epochs=2, steps_per_execution=2)
    # one execution of two steps skipped, one trained
    assert [(batch, "loss" in logs) for _, batch, logs in second.batch_end] == [
        (1, False),
        (3, True),
    ]
    assert_weights_equal(at_batch_2.weights, first.batch_weights[2])  # after global step 6
    assert int(model.optimizer.iterations.numpy()) == 2 * STEPS


def test_callbacks_listed_after_it_are_restored_too(tmp_path):
    # BackboneFinetuning added by an overlay lands after the backup in the stack
    with pytest.raises(Interrupted):
        job(tmp_path, [RaiseAt(2), Backup(), BackboneFinetuning(unfreeze_at_epoch=1)], 0)
    finetuning = BackboneFinetuning(unfreeze_at_epoch=1, verbose=0)
    recorder = Recorder(lr=True)
    model = job(tmp_path, [Backup(verbose=0), finetuning, recorder], 1)
    assert recorder.epochs == [2, 3]
    # divided once in the first run (0.01 -> 0.001), restored with the optimizer, not again
    assert recorder.epoch_begin_lr == pytest.approx([0.001, 0.001])
    assert finetuning.lr_divided and model.get_layer("body").trainable


@pytest.mark.parametrize("steps_per_execution", [1, 2])
def test_a_job_resumed_mid_epoch_trains_on_the_schedules_rates(tmp_path, steps_per_execution):
    """The job's exact resume (data positioned at the next batch, resume_within_epoch) with a
    rate that changes every step: the resumed job ends with the uninterrupted one's weights."""
    from callbacks.backup import resume_within_epoch

    def schedule():
        return LRSchedule("exponential", lr=0.01, decay_rate=0.5, decay_epochs=1)

    def model_():
        return make_model(optimizer="adam", seed=0, steps_per_execution=steps_per_execution)

    whole = model_()
    whole.fit(DATA, epochs=2, shuffle=False, verbose=0, callbacks=[schedule()])

    cut = model_()
    stack = build_stack([schedule(), RaiseAt(1, batch=2), Backup(save_every_n_steps=2)],
                        RunContext(run_dir=tmp_path), cut)  # fmt: skip
    with pytest.raises(Interrupted):
        cut.fit(DATA, epochs=2, shuffle=False, callbacks=stack.for_fit(2, STEPS))
    stack.end_job(JobStatus.FAILED)

    rerun = model_()
    backup = Backup(save_every_n_steps=2, verbose=0)
    stack = build_stack([schedule(), backup], RunContext(run_dir=tmp_path), rerun)
    epoch, steps_done = backup.resume_point()
    assert (epoch, steps_done) == (1, 2)
    data = DATA.skip(steps_done).repeat()  # epoch 1 only, from its third batch
    resume_within_epoch(stack, rerun, epoch, steps_done, DATA.element_spec)
    rerun.fit(data, epochs=2, steps_per_epoch=STEPS, callbacks=stack.for_fit(2, STEPS))
    stack.end_job(JobStatus.FINISHED)
    assert int(rerun.optimizer.iterations.numpy()) == 2 * STEPS
    for got, want in zip(rerun.get_weights(), whole.get_weights(), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
