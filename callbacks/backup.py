"""Backup and restore of the training state so a rerun of an interrupted job resumes."""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import shutil
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np

from callbacks.base import TrainkitCallback, read_variables
from trainkit import signals
from trainkit.context import BuffersTracking, JobStatus
from trainkit.tracking.files import RUN_ID_FILE
from trainkit.tracking.writer import WorkerThread
from trainkit.train_function import PLACEHOLDER

FORMAT_VERSION = 2


class Backup(TrainkitCallback):
    """Saves the training state regularly and, when ``fit`` starts in a run directory that
    holds one, restores it and resumes exactly where the state was saved.

    What is saved (``<run_dir>/<dirname>/``): ``state-<ns>.npz`` with every model variable
    (weights, non-trainable statistics and the ``keras.random.SeedGenerator`` states of dropout
    and other random layers) and every optimizer variable (slots, iteration count, learning
    rate), and ``latest.json`` with the position (epoch, step within the epoch, global step), the
    steps per epoch, whether training had finished (and stopped early), the random generators'
    states (Python ``random``, NumPy's global generator, Keras's global seed generator) and the
    ``state_dict()`` of every other callback of the job that has one (``EarlyStopping``,
    ``ReduceLROnPlateau``, ``LRSchedule``, ``Checkpoint``, ``BackboneFinetuning``). The data order
    needs no state: the job's training data is a function of (seed, epoch)
    (:class:`trainkit.data.pipeline.TrainData`). It saves at every epoch end, every
    ``save_every_n_steps`` steps if set (read from the stack's clock), after the running step
    when the job receives SIGINT or SIGTERM (:mod:`trainkit.signals`), and at ``on_train_end``.
    A signal during validation stops the job after the current validation batch: the state
    saved at ``on_job_end`` (``KILLED``) is then "every step of the epoch trained" with the
    epoch's training metrics as they were before validation reset them, and the rerun
    validates that epoch again and ends it. A state is committed by rewriting ``latest.json``
    (write, then atomic rename) after its arrays are complete, so an interrupt while saving
    leaves the previous state usable.

    Cost: the training thread only takes a snapshot (one read of each variable, which the
    runtime copies only if the next step writes it while the read is alive; the position, the
    generators' and callbacks' states as JSON) and hands the buffered tracking points to their
    writers. A writer thread of its own waits until those points are stored (MLflow,
    TensorBoard: a job killed after the commit lost none), then writes the arrays and commits.
    A save requested while the previous one is still being written replaces it (only the
    newest state matters). ``on_train_end``, a stop by a signal and ``on_job_end`` wait for the
    commit; a commit that failed is raised at the next save or wait. Outside a job (no run
    context, so no ``on_job_end``) every save waits for its commit.

    What a rerun restores, at ``on_train_begin``: all of the above. Training restarts at the
    saved epoch (``model._initial_epoch``, as ``keras.callbacks.BackupAndRestore`` does). In a
    job, a state saved in the middle of an epoch resumes with the very next batch: the job asks
    :meth:`resume_point` before ``fit``, starts the data at that batch with ``Dataset.skip``
    and calls :func:`resume_within_epoch`, so no batch is drawn twice and the callbacks see the
    remaining steps of the epoch only, counted by the clock from the saved step. With
    ``trainer.deterministic=true`` a job killed and rerun ends with the same weights as one that
    ran through. (In a plain ``fit`` whose data trainkit does not control, the first ``step``
    steps of the resumed epoch are drawn and dropped instead, their batch hooks get empty logs.)

    A finished training that had stopped early is not continued: the rerun restores the final
    weights and trains no epoch. Not restored: in-memory snapshots of other callbacks
    (``EarlyStopping``'s best weights, ``NanGuard``'s last good weights), the history of metrics
    before the resume. ``trainer.resume=PATH`` (a run directory or its backup folder) resumes
    from another run's backup, and continues that run's MLflow run when the store is the same
    (:meth:`continue_tracked_run`; ``latest.json`` records the run's id).

    Nothing is deleted when the job fails or is interrupted; with ``delete_on_success`` the
    backup folder is removed when the job ends ``FINISHED`` (or at ``on_train_end`` outside a
    job).

    Put it after the callbacks that change their state at epoch ends (early stopping, LR
    reduction, checkpoints): its epoch-end save must see those changes. The callbacks' states
    are restored at ``on_train_begin`` and once more at the first ``on_epoch_begin``, so
    callbacks listed after it are restored after their own ``on_train_begin`` resets too.

    Hooks: ``on_train_begin``, ``on_epoch_begin``, ``on_train_batch_begin``,
    ``on_train_batch_end``, ``on_test_begin``, ``on_epoch_end``, ``on_train_end``,
    ``on_job_end``.

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

    uses_clock = True

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
        # Set by the job when the data already starts at the saved batch (resume_within_epoch).
        self.data_positioned = False
        self._skip_steps = 0
        self._pending_save: tuple[int, int] | None = None
        # Where training stands, (epoch, steps done in it), and what the last save holds: a job
        # stopped by a signal saves at its end whatever the hooks did not (on_job_end).
        self._where: tuple[int, int] | None = None
        self._saved: tuple[int, int] | None = None
        self._in_fit = False
        self._train_metrics: list[Any] | None = None
        self._writer: WorkerThread | None = None
        self._next_commit: _Commit | None = None
        self._commit_lock = threading.Lock()
        self._failure: str | None = None

    @property
    def directory(self) -> Path:
        # Each worker of a multi-worker job keeps its own state (HDF5 locks a file it writes).
        if self.is_chief or self.context is None:
            return self.run_dir / self.dirname
        return self.run_dir / self.dirname / f"worker-{self.context.worker_index}"

    def _source(self) -> Path:
        """Where to restore from: ``trainer.resume`` (a run or backup folder) or our folder."""
        resume = ((self.context.config if self.context else {}).get("trainer") or {}).get("resume")
        if resume:
            path = Path(str(resume)).expanduser()
            return path if (path / "latest.json").exists() else path / self.dirname
        return self.directory

    def continue_tracked_run(self) -> str | None:
        """With ``trainer.resume=PATH`` (another run directory's backup), make this run
        directory continue the MLflow run that backup belongs to: its id goes into
        ``<run_dir>/mlflow_run_id``, which the MLflow logger resumes when the run is in its
        store (another store: a new run). Call it before ``fit``; returns the id, or None.

        Nothing changes when this run directory has a run of its own already, or when
        ``trainer.resume`` is not set."""
        source = self._source()
        if not self.is_chief or source == self.directory:
            return None
        own = self.run_dir / RUN_ID_FILE
        if own.exists():
            return None
        meta = self._read() or {}
        run_id = meta.get("mlflow_run_id")
        if not run_id:  # a backup written before it recorded the run: its run directory's
            sibling = source.parent / RUN_ID_FILE
            run_id = sibling.read_text().strip() if sibling.exists() else None
        if not run_id:
            return None
        self.run_dir.mkdir(parents=True, exist_ok=True)
        own.write_text(run_id + "\n")
        return str(run_id)

    def resume_point(self) -> tuple[int, int] | None:
        """(epoch, steps done in it) where a rerun continues, or None when there is no backup.

        ``epochs``, ``steps`` (per epoch) are the coming fit's, to tell a finished or changed
        run."""
        meta = self._read()
        return None if meta is None else self._position(meta)

    def _read(self) -> dict[str, Any] | None:
        self.wait()
        pointer = self._source() / "latest.json"
        if not pointer.exists():
            return None
        meta = json.loads(pointer.read_text())
        return meta if meta.get("format") == FORMAT_VERSION else None

    def _position(self, meta: dict[str, Any], epochs: int | None = None, steps=None):
        epoch, step = int(meta["epoch"]), int(meta["step"])
        if meta.get("finished") and meta.get("stopped_early"):
            return max(int(epochs or 0), epoch), 0
        if step and steps is not None and meta.get("steps_per_epoch") != steps:
            print(
                f"Backup: steps per epoch changed ({meta.get('steps_per_epoch')} -> "
                f"{steps}); resuming at the start of epoch {epoch + 1}"
            )
            return epoch, 0
        return epoch, step

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
        self._skip_steps = 0
        self._resume_at: tuple[int, int] = (-1, 0)
        self._trained = False
        self._interrupted = False
        self._pending_states: dict[str, Any] = {}
        self._metric_state: list[Any] = []
        self._pending_save: tuple[int, int] | None = None
        self._where = self._saved = None
        self._in_fit = True
        self._train_metrics = None
        self.restored = None
        meta = self._read()
        if meta is None:
            return
        source = self._source()
        self._load_state(source / meta["weights"], meta.get("random") or {})
        self._pending_states = meta.get("callbacks", {})
        self._restore_states()
        epoch, step = self._position(meta, self.params.get("epochs"), self._steps)
        self.model._initial_epoch = epoch
        self._skip_steps = 0 if self.data_positioned else step
        self._resume_at = (epoch, step)
        self._where = self._saved = (epoch, step)
        self.restored = meta
        # The clock's "largest step reached" is the backup's: a rerun whose training is over
        # (stopped during the test evaluation) logs its test_* metrics at the step they belong to.
        if self.clock.final_step < int(meta.get("global_step") or 0):
            self.clock.final_step = int(meta["global_step"])
        if self.verbose:
            where = f"epoch {epoch + 1}" + (f", step {step}" if step else "")
            print(f"Backup: restored {source / meta['weights']}; resuming at {where}")

    def _load_state(self, path: Path, rng: dict[str, Any]) -> None:
        optimizer = self.model.optimizer
        if optimizer is not None and not optimizer.built:
            # The slots exist only once built; build them to fill them (in the strategy's
            # scope: a multi-worker model's variables can only be made there).
            strategy = getattr(self.model, "distribute_strategy", None)
            with strategy.scope() if strategy is not None else contextlib.nullcontext():
                optimizer.build(self.model.trainable_variables)
        with np.load(path) as arrays:
            for prefix, variables in _state_variables(self.model):
                count = int(arrays[f"{prefix}_count"])
                if count != len(variables):
                    raise ValueError(
                        f"Backup {path} holds {count} {prefix} variables, the model has "
                        f"{len(variables)}: it belongs to another model"
                    )
                for i, variable in enumerate(variables):
                    variable.assign(arrays[f"{prefix}{i}"])
            count = int(arrays["metrics_count"]) if "metrics_count" in arrays else 0
            # The epoch's running metrics, put back after Keras resets them at the resumed
            # epoch's start (on_epoch_begin), so its logs cover the whole epoch.
            self._metric_state = [arrays[f"metrics{i}"] for i in range(count)]
        if "python" in rng:
            version, state, gauss = rng["python"]
            random.setstate((version, tuple(state), gauss))
        if "numpy" in rng:
            name, keys, pos, has_gauss, cached = rng["numpy"]
            np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))

    def _restore_states(self) -> None:
        for key, callback in self._callback_keys().items():
            if key in self._pending_states:
                callback.load_state_dict(self._pending_states[key])

    def _metrics(self) -> list[Any]:
        return list(getattr(self.model, "metrics_variables", []))

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        state, self._metric_state = self._metric_state, []
        resume_epoch, resume_step = self._resume_at
        variables = self._metrics()
        if epoch == resume_epoch and resume_step and len(state) == len(variables):
            for variable, value in zip(variables, state, strict=True):
                variable.assign(value)
        if self._pending_states:
            # Again, for the callbacks listed after this one: their on_train_begin ran after
            # the first restore and reset them.
            self._restore_states()
            self._pending_states = {}
        self._epoch = epoch
        self._train_metrics = None
        if self._where is None or self._where[0] != epoch:
            self._where = (epoch, 0)

    def needs_batch_hook(self, hook: str) -> bool:
        # The begin hook only starts a resumed epoch's skipped steps.
        return hook != "on_train_batch_begin" or bool(self._skip_steps)

    @property
    def after_stack_batches(self) -> bool:
        """Only saves every N steps wait for the stack's end of a step (``after_stack``)."""
        return bool(self.save_every_n_steps)

    def on_train_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        if self._skip_steps:
            self._install_skipper()

    def _install_skipper(self) -> None:
        # Only in a plain fit whose data does not start at the saved batch: the first steps of
        # the resumed epoch draw their batches and drop them. Called from the first batch hook
        # of the resumed epoch, after every on_train_begin and on_epoch_begin, so no one
        # rebuilds the train function after this.
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
        clock = self.clock
        done = clock.steps_in_epoch
        resume_epoch, resume_step = self._resume_at
        if self._epoch == resume_epoch and done <= resume_step:
            return  # a skipped step of the resumed epoch: nothing new to save
        self._trained = True
        self._where = (self._epoch, done)
        if signals.requested() is not None:
            # SIGINT / SIGTERM: this step is done; the job stops after the batch hooks.
            self._interrupted = True
            # Now: GracefulStop raises before the stack's after_stack; the loggers record this
            # step's pending logs when the job ends them (on_job_end).
            self._pending_save = (self._epoch, done)
            self._save_pending()
            self.wait()
        elif clock.due(self.save_every_n_steps) and not (self._steps and done >= self._steps):
            self._pending_save = (self._epoch, done)  # (an epoch's last step: epoch end saves)
        if not self.in_stack:
            self._save_pending()

    def on_test_begin(self, logs: dict[str, Any] | None = None) -> None:
        if self._in_fit:
            # Validation resets the compiled metrics: keep the training epoch's running values,
            # what a save during validation holds (once an epoch, a few scalars).
            self._train_metrics = read_variables(self._metrics())

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._trained = True  # an epoch ended in this fit (even one whose steps were all done)
        self._train_metrics = None
        self._where = (epoch + 1, 0)
        last_epoch = epoch + 1 >= int(self.params.get("epochs") or 0)
        # A signal also sets stop_training: that is a stop to resume from, not an early stop.
        signalled = signals.requested() is not None
        if last_epoch or self._interrupted or (self.model.stop_training and not signalled):
            return  # on_train_end, which comes next, saves the final state
        if signalled:
            self._interrupted = True
        self._pending_save = (epoch + 1, 0)
        if not self.in_stack:
            self._save_pending()

    def after_stack(self, hook: str, index: int | None, logs: dict[str, Any]) -> None:
        """In a stack, a state is committed after every callback ran the hook and the loggers
        recorded it (``LogsObserver``s before this one), and after the MLflow writer sent what
        it holds: a job killed right after the commit has the tracking store up to that step,
        so the rerun's history continues without a gap."""
        if hook in ("on_train_batch_end", "on_epoch_end"):
            self._save_pending()

    def _save_pending(self) -> None:
        pending, self._pending_save = self._pending_save, None
        if pending is not None:
            self.save(*pending)

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        self._in_fit = False
        if self._interrupted:
            return  # the state after the last step is saved; the epoch is not over
        if self._trained or self.restored is None:
            self.save(
                self._epoch + 1 if self._trained else 0,
                0,
                finished=True,
                stopped_early=bool(self.model.stop_training) and signals.requested() is None,
            )
            self._where = self._saved
        self.model._initial_epoch = None
        self.wait()
        if self.delete_on_success and self.context is None:
            shutil.rmtree(self.directory, ignore_errors=True)

    def on_job_end(self, status: str) -> None:
        if status == JobStatus.KILLED and self._in_fit:
            self._save_where_stopped()
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close(timeout=None)
        self._raise_failure()
        if self.delete_on_success and status == JobStatus.FINISHED:
            shutil.rmtree(self.directory, ignore_errors=True)

    def _save_where_stopped(self) -> None:
        """A signal stopped the fit where no hook of ours saved: during validation (every
        training step of the epoch done, the epoch's end still to come) or between our batch
        hook and the stop. The rerun continues from there: it validates the epoch again and
        ends it, or trains the next step."""
        self._in_fit = False
        position = self._where
        if position is None or position == self._saved:
            return
        if signals.requested() is None or signals.forced():
            # not a graceful stop: it may have struck between a step and its hooks, the
            # weights past the position
            return
        if self.context is not None and self.context.strategy == "multi_worker":
            # Reading the metrics is a collective there: one worker alone would wait for its
            # peers forever. The workers save together at their batch hooks instead.
            return
        try:
            self._pending_save = None
            self.save(*position)
            self.wait()
        except Exception as exc:  # noqa: BLE001 - on_job_end must not raise
            print(f"Backup: could not save the state where the job stopped: {exc}")

    def save(
        self, epoch: int, step: int, finished: bool = False, stopped_early: bool = False
    ) -> None:
        """Commit the current state as resuming at ``epoch`` (0-based), ``step`` steps in.

        Returns once the snapshot is taken; the commit follows on the backup's writer thread
        (:meth:`wait` waits for it)."""
        self._raise_failure()
        name = f"state-{time.time_ns()}.npz"
        variables = [
            (prefix, read_variables(group)) for prefix, group in _state_variables(self.model)
        ]
        # The epoch's running training metrics (their values before validation reset them).
        metrics = self._train_metrics
        if metrics is None:
            metrics = read_variables(self._metrics())
        version, state, gauss = random.getstate()
        name_np, keys, pos, has_gauss, cached = np.random.get_state()
        meta = {
            "format": FORMAT_VERSION,
            "weights": name,
            "epoch": epoch,
            "step": step,
            "global_step": epoch * (self._steps or 0) + step,
            "steps_per_epoch": self._steps,
            "finished": finished,
            "stopped_early": stopped_early,
            "random": {
                "python": [version, list(state), gauss],
                "numpy": [name_np, keys.tolist(), int(pos), int(has_gauss), float(cached)],
            },
            "callbacks": {key: cb.state_dict() for key, cb in self._callback_keys().items()},
        }
        run_id_file = self.run_dir / RUN_ID_FILE
        if run_id_file.exists():  # trainer.resume=PATH from another directory continues it
            meta["mlflow_run_id"] = run_id_file.read_text().strip()
        trackers = self.context.find_all(BuffersTracking) if self.context is not None else []
        commit = _Commit(
            directory=self.directory,
            name=name,
            variables=variables,
            metrics=metrics,
            meta=json.dumps(meta),  # as text now: the callbacks' states change meanwhile
            waits=[tracker.hand_over_tracking() for tracker in trackers],
        )
        self._saved = (epoch, step)
        with self._commit_lock:
            self._next_commit = commit
        if self._writer is None:
            self._writer = WorkerThread("trainkit-backup")
        self._writer.submit(self._commit_next)
        if self.context is None:  # a plain fit: no on_job_end will wait for the commit
            self.wait()

    def wait(self) -> None:
        """Wait until the states saved so far are committed; raise if a commit failed."""
        if self._writer is not None:
            self._writer.drain()
        self._raise_failure()

    def _raise_failure(self) -> None:
        failure, self._failure = self._failure, None
        if failure is not None:
            raise RuntimeError(f"Backup: could not write the state to {self.directory}: {failure}")

    def _commit_next(self) -> None:
        """On the writer thread: commit the newest snapshot, unless a later job already did."""
        with self._commit_lock:
            commit, self._next_commit = self._next_commit, None
        if commit is None:
            return
        try:
            commit.write()
        except Exception as exc:  # noqa: BLE001 - raised on the training thread, at the next save
            self._failure = f"{type(exc).__name__}: {exc}"


@dataclass
class _Commit:
    """One saved state as the training thread took it; :meth:`write` runs on the writer."""

    directory: Path
    name: str
    variables: list[tuple[str, list[Any]]]  # (prefix, snapshots of its variables)
    metrics: list[Any]
    meta: str  # latest.json's text
    waits: list[Callable[[float], bool]]  # the trackers' waits for the points handed over

    def write(self) -> None:
        for wait in self.waits:  # the tracking points up to this state are stored first
            wait(10.0)
        self.directory.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, Any] = {}
        for prefix, values in self.variables:
            arrays[f"{prefix}_count"] = np.asarray(len(values))
            for i, value in enumerate(values):
                arrays[f"{prefix}{i}"] = np.asarray(value)
        arrays["metrics_count"] = np.asarray(len(self.metrics))
        for i, value in enumerate(self.metrics):
            arrays[f"metrics{i}"] = np.asarray(value)
        temporary = self.directory / f".tmp-{self.name}"
        with open(temporary, "wb") as handle:
            np.savez(handle, **arrays)
        os.replace(temporary, self.directory / self.name)
        pointer = self.directory / "latest.json"
        temporary = pointer.with_name(".tmp-latest.json")
        temporary.write_text(self.meta)
        os.replace(temporary, pointer)
        for old in self.directory.glob("state-*"):
            if old.name != self.name:
                old.unlink(missing_ok=True)


def _state_variables(model: keras.Model) -> list[tuple[str, list[Any]]]:
    """The variables a backup holds, in a stable order: the model's (weights, statistics,
    seed generator states), the optimizer's, and Keras's global seed generator's."""
    from keras.src.random.seed_generator import global_seed_generator

    parts: list[tuple[str, list[Any]]] = [("model", list(model.variables))]
    if model.optimizer is not None:
        parts.append(("optimizer", list(model.optimizer.variables)))
    parts.append(("keras_seed", [global_seed_generator().state]))
    return parts


def resume_within_epoch(
    stack: Any, model: keras.Model, epoch: int, steps_done: int, element_spec: Any = None
) -> None:
    """Make ``fit`` continue epoch ``epoch`` after ``steps_done`` steps, with data that already
    starts at the next unseen batch (``TrainData.stream(epoch, ..., skip=steps_done)``).

    Keras runs every epoch for ``steps_per_epoch`` steps: the first ``steps_done`` steps of the
    resumed epoch become calls that neither draw a batch nor train, and the stack does not see
    them; the remaining steps reach the callbacks as batches 0, 1 ... of an epoch that the
    stack's clock (``clock.resume_within_epoch``) counts from ``steps_done``.
    """
    if steps_done <= 0:
        return
    stack.clock.resume_within_epoch(epoch, steps_done)
    for callback in getattr(stack, "user_callbacks", []):
        if isinstance(callback, Backup):
            callback.data_positioned = True
    if element_spec is not None:
        # Build the compiled metrics now (Keras builds them at the first traced step), so the
        # backup can put the resumed epoch's running metrics back at its on_epoch_begin.
        import tensorflow as tf

        def zeros(spec: Any) -> Any:
            return tf.zeros([1 if d is None else d for d in spec.shape], spec.dtype)

        # In the strategy's scope, as Keras's own build: the metrics' and the optimizer's
        # variables of a multi-worker model can only be made there.
        with model.distribute_strategy.scope():
            model._symbolic_build(data_batch=tf.nest.map_structure(zeros, element_spec))
    spx = max(1, int(getattr(model, "steps_per_execution", 1) or 1))
    idle = [math.ceil(steps_done / spx)]

    def no_step(iterator: Any) -> dict[str, Any]:
        idle[0] -= 1
        if idle[0] <= 0:
            # Made now, from the train step and optimizer as the callbacks' on_train_begin
            # left them (per-step rows, the in-graph learning rate).
            model.train_function = None
            model.make_train_function()
            # The running metrics the backup put back: when every step of the epoch was done
            # before the stop (it stopped during validation), the epoch's logs are these.
            return model.get_metrics_result()
        return {}

    setattr(no_step, PLACEHOLDER, True)
    model.train_function = no_step
    originals = {
        name: getattr(stack, name)
        for name in ("on_epoch_begin", "on_train_batch_begin", "on_train_batch_end")
    }
    active = [False]

    def restore() -> None:
        for name in originals:
            stack.__dict__.pop(name, None)

    def epoch_begin(index: int, logs: dict[str, Any] | None = None) -> None:
        active[0] = index == epoch
        if not active[0]:
            restore()
        originals["on_epoch_begin"](index, logs)

    def batch_begin(batch: int, logs: dict[str, Any] | None = None) -> None:
        if not active[0]:
            originals["on_train_batch_begin"](batch, logs)
        elif batch >= steps_done:
            originals["on_train_batch_begin"](batch - steps_done, logs)

    def batch_end(batch: int, logs: dict[str, Any] | None = None) -> None:
        if not active[0]:
            originals["on_train_batch_end"](batch, logs)
        elif batch >= steps_done:
            originals["on_train_batch_end"](batch - steps_done, logs)

    stack.on_epoch_begin = epoch_begin
    stack.on_train_batch_begin = batch_begin
    stack.on_train_batch_end = batch_end
