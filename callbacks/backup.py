"""Backup and restore of the training state so a rerun of an interrupted job resumes."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import keras

from callbacks.base import TrainkitCallback
from trainkit.context import JobStatus

FORMAT_VERSION = 1


class Backup(TrainkitCallback):
    """Saves the training state regularly and, when ``fit`` starts in a run directory that
    holds one, restores it and resumes where the state was saved.

    What is saved (``<run_dir>/<dirname>/``): a ``.weights.h5`` file with the model weights
    and the full optimizer state (slots, iteration count, learning rate), and ``latest.json``
    with the position (epoch, step within the epoch, global step), the steps per epoch, whether
    training had finished (and stopped early), and the ``state_dict()`` of every other callback
    of the job that has one (``EarlyStopping``, ``ReduceLROnPlateau``, ``LRSchedule``,
    ``Checkpoint``, ``BackboneFinetuning``). It saves at every epoch end, every
    ``save_every_n_steps`` steps if set, and at ``on_train_end``. A state is committed by
    rewriting ``latest.json`` (write, then atomic rename) after its weights file is complete,
    so an interrupt while saving leaves the previous state usable. (The last epoch's end is
    left to ``on_train_end``, which follows it, so a large model is not written twice.)

    What a rerun restores, at ``on_train_begin``: weights, optimizer state, the callbacks'
    states, and the position. Training restarts at the saved epoch (through Keras's
    ``model._initial_epoch``, which ``keras.callbacks.BackupAndRestore`` uses too); a state
    saved in the middle of an epoch makes the first ``step`` executions of that epoch skip
    training: their batches are drawn from the dataset and dropped, their batch hooks get empty
    logs, and the epoch's metrics cover the remaining steps only. The step count, the learning
    rate schedule and the optimizer's iteration count are where they were; the *samples* are
    not the same ones, because the data pipeline restarts its epoch order (a seeded shuffle
    replays the first epoch's order). A finished training that had stopped early (early
    stopping, NaN guard) is not continued: the rerun restores the final weights and trains no
    epoch. Not restored: random generator states, in-memory snapshots of other callbacks
    (``EarlyStopping``'s best weights, ``NanGuard``'s last good weights), the history of
    metrics before the resume.

    Nothing is deleted when the job fails or is interrupted; with ``delete_on_success`` the
    backup folder is removed when the job ends ``FINISHED`` (or at ``on_train_end`` outside a
    job).

    Put it after the callbacks that change their state at epoch ends (early stopping, LR
    reduction, checkpoints): its epoch-end save must see those changes. The callbacks' states
    are restored at ``on_train_begin`` and once more at the first ``on_epoch_begin``, so
    callbacks listed after it (``BackboneFinetuning`` added by an overlay) are restored after
    their own ``on_train_begin`` resets too. The job must put its callback list in
    ``context.extras["callbacks"]`` for the callbacks' states to be saved. A batch hook
    compares integers; the save every N steps writes files in the training thread.

    Hooks: ``on_train_begin``, ``on_epoch_begin``, ``on_train_batch_begin``,
    ``on_train_batch_end``, ``on_epoch_end``, ``on_train_end``, ``on_job_end``.

    Args:
        save_every_n_steps: also save every N optimizer steps; None: epoch ends only.
        dirname: the folder under the run directory.
        delete_on_success: remove the folder after a successful job.
        verbose: 1 prints a line when it resumes.

    Example::

        Backup(save_every_n_steps=500)
        # conf/callbacks/<stack>.yaml, last entry:
        #   backup: {_target_: callbacks.backup.Backup, save_every_n_steps: null}
        # rerun the interrupted job with the same run directory:
        #   python run.py ... hydra.run.dir=outputs/2025-01-01/12-00-00
    """

    def __init__(
        self,
        save_every_n_steps: int | None = None,
        dirname: str = "backup",
        delete_on_success: bool = False,
        verbose: int = 1,
    ) -> None:
        super().__init__()
        self.save_every_n_steps = int(save_every_n_steps) if save_every_n_steps else None
        self.dirname = dirname
        self.delete_on_success = delete_on_success
        self.verbose = verbose
        self.restored: dict[str, Any] | None = None
        self._skip_steps = 0

    @property
    def directory(self) -> Path:
        # Each worker of a multi-worker job keeps its own state (HDF5 locks a file it writes).
        if self.is_chief or self.context is None:
            return self.run_dir / self.dirname
        return self.run_dir / self.dirname / f"worker-{self.context.worker_index}"

    def _callbacks(self) -> list[keras.callbacks.Callback]:
        listed: Iterable[keras.callbacks.Callback] = (
            self.context.callbacks if self.context is not None else []
        )
        return [cb for cb in listed if cb is not self and hasattr(cb, "state_dict")]

    def _callback_keys(self) -> dict[str, keras.callbacks.Callback]:
        keys: dict[str, keras.callbacks.Callback] = {}
        for callback in self._callbacks():
            base = getattr(callback, "trainkit_name", None) or type(callback).__name__
            key, n = base, 2
            while key in keys:
                key, n = f"{base}#{n}", n + 1
            keys[key] = callback
        return keys

    # -- restore ------------------------------------------------------------------------------

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._steps = self.params.get("steps")
        self._epoch = 0
        self._done_in_epoch = 0
        self._skip_steps = 0
        self._resume_at: tuple[int, int] = (-1, 0)
        self._next_step_save = self.save_every_n_steps or 0
        self._trained = False
        self._pending_states: dict[str, Any] = {}
        self.restored = None
        pointer = self.directory / "latest.json"
        if not pointer.exists():
            return
        meta = json.loads(pointer.read_text())
        optimizer = self.model.optimizer
        if optimizer is not None and not optimizer.built:
            # load_weights needs the optimizer's slots to exist to fill them.
            optimizer.build(self.model.trainable_variables)
        self.model.load_weights(self.directory / meta["weights"])
        self._pending_states = meta.get("callbacks", {})
        self._restore_states()
        epoch, step = int(meta["epoch"]), int(meta["step"])
        if meta.get("finished") and meta.get("stopped_early"):
            epoch, step = max(int(self.params.get("epochs") or 0), epoch), 0
        elif step and meta.get("steps_per_epoch") != self._steps:
            print(
                f"Backup: steps per epoch changed ({meta.get('steps_per_epoch')} -> "
                f"{self._steps}); resuming at the start of epoch {epoch + 1}"
            )
            step = 0
        self.model._initial_epoch = epoch
        self._skip_steps = step
        self._resume_at = (epoch, step)
        self.restored = meta
        if self.verbose:
            where = f"epoch {epoch + 1}" + (f", step {step}" if step else "")
            print(f"Backup: restored {self.directory / meta['weights']}; resuming at {where}")

    def _restore_states(self) -> None:
        for key, callback in self._callback_keys().items():
            if key in self._pending_states:
                callback.load_state_dict(self._pending_states[key])

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if self._pending_states:
            # Again, for the callbacks listed after this one: their on_train_begin ran after
            # the first restore and reset them.
            self._restore_states()
            self._pending_states = {}
        self._epoch = epoch
        self._done_in_epoch = 0
        self._epoch_offset = epoch * self._steps if self._steps else 0
        if self.save_every_n_steps and self._next_step_save <= self._epoch_offset:
            n = self.save_every_n_steps
            self._next_step_save = (self._epoch_offset // n + 1) * n

    def on_train_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        if self._skip_steps:
            self._install_skipper()

    def _install_skipper(self) -> None:
        # Called from the first batch hook of the resumed epoch, after every callback's
        # on_train_begin and on_epoch_begin, so no one rebuilds the train function after this.
        model, steps_per_execution = self.model, int(getattr(self.model, "steps_per_execution", 1))
        train_function = model.train_function
        remaining = [-(-self._skip_steps // steps_per_execution)]
        self._skip_steps = 0

        def skip(iterator: Any) -> dict[str, Any]:
            for _ in range(steps_per_execution):
                next(iterator)
            remaining[0] -= 1
            if remaining[0] <= 0:
                model.train_function = train_function
            return {}

        model.train_function = skip

    # -- save ---------------------------------------------------------------------------------

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        done = batch + 1 if self._steps is None else min(batch + 1, self._steps)
        self._done_in_epoch = done
        resume_epoch, resume_step = self._resume_at
        if self._epoch == resume_epoch and done <= resume_step:
            return  # a skipped step of the resumed epoch: nothing new to save
        self._trained = True
        if not self.save_every_n_steps:
            return
        global_step = self._epoch_offset + done
        if global_step >= self._next_step_save:
            n = self.save_every_n_steps
            self._next_step_save = (global_step // n + 1) * n
            self.save(self._epoch, done)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        last_epoch = epoch + 1 >= int(self.params.get("epochs") or 0)
        if last_epoch or self.model.stop_training:
            return  # on_train_end, which comes next, saves the final state
        self.save(epoch + 1, 0)

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        if self._trained or self.restored is None:
            self.save(
                self._epoch + 1 if self._trained else 0,
                0,
                finished=True,
                stopped_early=bool(self.model.stop_training),
            )
        self.model._initial_epoch = None
        if self.delete_on_success and self.context is None:
            shutil.rmtree(self.directory, ignore_errors=True)

    def on_job_end(self, status: str) -> None:
        if self.delete_on_success and status == JobStatus.FINISHED:
            shutil.rmtree(self.directory, ignore_errors=True)

    def save(
        self, epoch: int, step: int, finished: bool = False, stopped_early: bool = False
    ) -> None:
        """Commit the current state as resuming at ``epoch`` (0-based), ``step`` steps in."""
        self.directory.mkdir(parents=True, exist_ok=True)
        global_step = epoch * (self._steps or 0) + step
        weights = f"state-{time.time_ns()}.weights.h5"
        self.model.save_weights(self.directory / weights)
        meta = {
            "format": FORMAT_VERSION,
            "weights": weights,
            "epoch": epoch,
            "step": step,
            "global_step": global_step,
            "steps_per_epoch": self._steps,
            "finished": finished,
            "stopped_early": stopped_early,
            "callbacks": {key: cb.state_dict() for key, cb in self._callback_keys().items()},
        }
        pointer = self.directory / "latest.json"
        temporary = pointer.with_name(".tmp-latest.json")
        temporary.write_text(json.dumps(meta, indent=2))
        os.replace(temporary, pointer)
        for old in self.directory.glob("state-*.weights.h5"):
            if old.name != weights:
                old.unlink(missing_ok=True)
