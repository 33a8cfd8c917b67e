"""TensorBoard logging for a trainkit job, on top of ``keras.callbacks.TensorBoard``.

Stack entry (``conf/callbacks/<stack>.yaml``)::

    tensorboard:
      _target_: callbacks.tensorboard.TensorBoardLogger
      log_every_n_steps: 1    # batch_* scalars every N optimizer steps (0: epoch scalars only)
      histogram_freq: 1       # weight histograms every N epochs (0: none)
      profile_batch: 0        # e.g. "10,20": TensorFlow profiler over those batches
      write_graph: true

Event files go under ``<run_dir>/tensorboard/``:

* ``train/``: ``epoch_*`` scalars (Keras' own: loss, metrics, learning_rate, and any number
  other callbacks put in the epoch logs), ``batch_*`` scalars at the global step (loss, metrics,
  ``lr``, ``step_time``, ``samples_per_sec`` ... whatever numbers are in the batch logs), weight
  histograms, the model graph, the profiler trace, and the ``augmented_samples`` image grid.
* ``validation/``: ``epoch_*`` of the validation split.
* ``test/``: ``test_*`` of a standalone ``evaluate`` and the ``confusion_matrix`` image.
* the directory itself: the HParams session (the flattened config), so ``tensorboard --logdir``
  over a sweep's directory compares its jobs in the HParams dashboard.

Per-step scalars are buffered in memory (a reference to Keras' logs dict per step, about a
microsecond on the training thread) and handed at epoch end to a background thread
(:class:`trainkit.tracking.writer.WorkerThread`) that builds the event protos and writes them
with :class:`trainkit.tracking.events.ScalarWriter`. The epoch scalars and the weight
histograms go the same way (the training thread only reads the weights, a snapshot that the
thread makes numpy, and reads the learning rate): no ``tf.summary`` call and no file write on
the training thread at a batch or an epoch end. The thread is drained, and every file flushed,
at the end of ``fit`` and of the job. The reference is the dict every callback of the list
receives, so keys that callbacks placed after this one write into it are written too. Epoch
scalars and test scalars are written in ``after_stack``, once every callback of the stack
(:func:`trainkit.stack.build_stack`) ran the hook: a key any of them adds (``best_epoch``, a
user's own) is in them; in a plain ``model.fit(callbacks=[...])`` they are written in the hook
itself. Steps are the stack's clock (``self.clock``). Under ``steps_per_execution = k > 1``
the stack hands over the metrics of every step of an execution, not only its last
(:mod:`trainkit.step_rows`): ``batch_*`` scalars keep one point per step.

Validation ``epoch_*`` scalars are the validation values of a training key (``val_loss`` is
``epoch_loss`` under ``validation/``); other ``val_*`` keys keep their name (Timing's
``val_time`` is ``epoch_val_time``, not a validation ``epoch_time``).
"""

from __future__ import annotations

import logging
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import numpy as np

from callbacks.base import TrainkitCallback, read_variables
from trainkit.context import JobStatus
from trainkit.tracking import plots
from trainkit.tracking.evaluation import confusion_on_test_split
from trainkit.tracking.events import ScalarWriter, histogram_summary, is_number
from trainkit.tracking.flatten import flatten, redact_config
from trainkit.tracking.writer import WorkerThread

log = logging.getLogger("trainkit.tracking")

TENSORBOARD_DIR = "tensorboard"


def _hparam_value(value: Any) -> bool | int | float | str:
    if isinstance(value, bool | int | float | str):
        return value
    return str(value)


def _previous_log(root: Path, folder: str) -> tuple[set[str], int, int]:
    """What earlier processes of the job wrote in ``root/folder``: the tags of its step-0
    summaries, its last ``batch_*`` step and its last epoch (-1: none). Read only on a rerun
    whose folder holds event files."""
    files = sorted((root / folder).glob("events.out.tfevents.*"))
    tags: set[str] = set()
    last_step = last_epoch = -1
    if not files:
        return tags, last_step, last_epoch
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    for path in files:
        try:
            for event in EventFileLoader(str(path)).Load():
                for value in event.summary.value:
                    if event.step == 0:
                        tags.add(value.tag)
                    if value.tag.startswith("batch_"):
                        last_step = max(last_step, int(event.step))
                    elif value.tag.startswith("epoch_"):
                        last_epoch = max(last_epoch, int(event.step))
        except Exception as exc:  # noqa: BLE001 - a torn file of a killed process
            log.debug("TensorBoard: cannot read %s: %s", path, exc)
    return tags, last_step, last_epoch


class TensorBoardLogger(keras.callbacks.TensorBoard, TrainkitCallback):
    """See the module docstring.

    Args:
        log_every_n_steps: ``batch_*`` scalars every N optimizer steps; 0 turns them off.
        histogram_freq: weight histograms every N epochs; 0 turns them off.
        profile_batch: as in ``keras.callbacks.TensorBoard`` (0 = off, ``"10,20"`` = a range).
        write_graph: the model graph and Keras' model summary.
        sample_images: the grid of ``ctx.sample_images`` at train begin.
        hparams: the HParams session (flattened config) and its metrics.
        log_dir: overrides ``<run_dir>/tensorboard``.
    """

    chief_only = True  # multi-worker: only the chief writes (trainkit.stack.Stack)

    def __init__(
        self,
        log_every_n_steps: int = 1,
        histogram_freq: int = 1,
        profile_batch: int | str | tuple[int, int] = 0,
        write_graph: bool = True,
        sample_images: bool = True,
        hparams: bool = True,
        log_dir: str | None = None,
    ) -> None:
        super().__init__(
            log_dir=log_dir or TENSORBOARD_DIR,
            histogram_freq=histogram_freq,
            write_graph=write_graph,
            update_freq="epoch",  # batch scalars are ours, buffered; Keras' are per-call
            profile_batch=profile_batch,
        )
        self.log_every_n_steps = int(log_every_n_steps)
        self.sample_images = sample_images
        self.hparams = hparams
        self._explicit_dir = log_dir
        self._batch_rows: list[tuple[int, dict[str, Any]]] = []
        self._scalar_writers: dict[str, ScalarWriter] = {}
        self._in_fit = False
        self._closed = False
        self._pending_epoch: tuple[int, dict[str, Any]] | None = None
        self._hparams_metrics_written = False
        self._session_started = False
        self._confusion_written = False
        self._thread: WorkerThread | None = None
        # tags a previous process of this job wrote (a rerun appends to its log), by folder
        self._written: dict[str, set[str]] | None = None
        # ... and the last batch step and epoch it wrote: a rerun that redoes them (resumed
        # from a backup older than the log) does not write them twice
        self._last_step = self._last_epoch = -1
        if not self._should_trace:
            # Without the profiler the batch-begin hook has nothing to do (it counted batches
            # for the profiler's range): Keras's no-op default, which the stack does not call.
            self.on_train_batch_begin = types.MethodType(  # type: ignore[method-assign]
                keras.callbacks.Callback.on_train_batch_begin, self
            )

    uses_clock = True
    # Batch rows keep a reference to the step's logs, read at epoch end: no after_stack call
    # per step is needed (trainkit.stack.Stack).
    after_stack_batches = False

    def _background(self) -> WorkerThread:
        if self._thread is None:
            self._thread = WorkerThread("trainkit-tensorboard")
        return self._thread

    def _drain(self, timeout: float = 120.0) -> None:
        if self._thread is not None:
            self._thread.drain(timeout=timeout)

    @property
    def async_safe(self) -> bool:  # type: ignore[override]
        # Buffering a reference is thread-safe; the profiler's start/stop per batch is not.
        return not self._should_trace

    # ------------------------------------------------------------------ dirs and writers

    def root(self) -> Path:
        return Path(self._explicit_dir) if self._explicit_dir else self.run_dir / TENSORBOARD_DIR

    def set_model(self, model: Any) -> None:
        # evaluate() and predict() call set_model again: keep fit's writers and graph.
        if getattr(self, "_model", None) is model and self._writers:
            return
        self.log_dir = str(self.root())
        if self._written is None:
            # A rerun of an interrupted job (resumed from its backup) appends to the log the
            # first process wrote: its once-a-job summaries (model summary, samples, HParams
            # session and config) are not written twice.
            train, self._last_step, self._last_epoch = _previous_log(self.root(), "train")
            self._written = {"train": train, ".": _previous_log(self.root(), ".")[0]}
            root = self._written["."]
            self._session_started = "_hparams_/session_start_info" in root
            self._hparams_metrics_written = "_hparams_/experiment" in root
        super().set_model(model)

    def _write_keras_model_summary(self) -> None:
        if "keras" not in (self._written or {}).get("train", ()):
            super()._write_keras_model_summary()

    def hand_over_tracking(self) -> Callable[[float], bool]:
        """Give the buffered ``batch_*`` scalars to the background thread, then a flush of every
        writer; the returned ``wait(timeout)`` waits until both are done
        (``trainkit.context.BuffersTracking``): a backup waits for it before committing, so a
        job killed after the commit and resumed from it misses no step in its event files."""
        self._submit_rows()
        thread = self._background()
        thread.submit(self._flush_writers)
        return thread.drain

    def _flush_writers(self) -> None:
        for writer in [*self._writers.values(), *self._scalar_writers.values()]:
            writer.flush()

    @property
    def _final_step(self) -> int:
        return self.clock.final_step

    def _scalars(self, name: str) -> ScalarWriter:
        writer = self._scalar_writers.get(name)
        if writer is None:
            path = self.root() if name == "." else self.root() / name
            writer = self._scalar_writers[name] = ScalarWriter(path)
        return writer

    def _tf_writer(self, name: str) -> Any:
        if name not in self._writers:
            self._writers[name] = self.summary.create_file_writer(str(self.root() / name))
        return self._writers[name]

    # ------------------------------------------------------------------ fit

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._in_fit = True
        self._closed = False
        super().on_train_begin(logs)
        try:
            self._write_samples()
            self._write_session_start()
        except Exception as exc:  # pictures are not worth a failed job
            log.warning(
                "TensorBoard: train-begin summaries failed: %s: %s", type(exc).__name__, exc
            )

    def _write_samples(self) -> None:
        images = self.context.sample_images if self.context is not None else None
        if not self.sample_images or images is None:
            return
        if "augmented_samples" in (self._written or {}).get("train", ()):
            return
        grid = plots.image_grid(np.asarray(images)[:32])
        with self._train_writer.as_default():
            self.summary.image("augmented_samples", grid[None], step=0)

    def _hparams(self) -> dict[str, Any]:
        """The flattened config, secrets redacted as in MLflow's params."""
        return flatten(redact_config(self.context.config)) if self.context is not None else {}

    def _write_session_start(self) -> None:
        if not self.hparams or self.context is None or self._session_started:
            return
        from tensorboard.plugins.hparams import api as hp

        values = {k: _hparam_value(v) for k, v in self._hparams().items()}
        if not values:
            return
        self._session_started = True
        trial = str(self.run_dir)
        self._scalars(".").write_summary(hp.hparams_pb(values, trial_id=trial))

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if epoch == 0 and self.clock.step == 0:
            self._last_step = self._last_epoch = -1  # training from scratch: nothing is redone
        super().on_epoch_begin(epoch, logs)

    def on_train_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        if self._should_trace:
            super().on_train_batch_begin(batch, logs)  # the profiler's batch range
        else:
            self._global_train_batch += 1

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        if self._should_trace or self._should_write_train_graph:
            super().on_train_batch_end(batch, None)  # graph once, profiler stop; no scalars
        every = self.log_every_n_steps
        if every <= 0 or logs is None:
            return
        if every > 1 and not self.clock.due(every):
            return
        # A reference: the callbacks after us still add their keys to this very dict.
        self._batch_rows.append((self.clock.step, logs))

    def on_train_steps(self, steps: range, rows: list[dict[str, float]]) -> None:
        """The earlier steps of an execution under ``steps_per_execution > 1``
        (:class:`trainkit.context.TakesStepRows`): ``batch_*`` scalars at each of them too."""
        every = self.log_every_n_steps
        if every <= 0:
            return
        append = self._batch_rows.append
        for step, row in zip(steps, rows, strict=True):
            if every == 1 or step % every == 0:
                append((step, row))

    def _log_weights(self, epoch: int) -> None:
        # Keras writes histograms with tf.summary.histogram, whose TF-side bucketing takes
        # 2.5 s (15 s on first trace) for AlexNet's 37 M-weight fc1 on this CPU. Here the
        # training thread only reads the weights (a snapshot, one read per variable); the
        # background thread makes them numpy, buckets them (0.2 s for fc1) and writes the
        # events. Same tags and format as Keras's.
        variables = [weight for layer in self.model.layers for weight in layer.weights]
        tags = [f"{weight.path.replace(':', '_')}/histogram" for weight in variables]
        # Writers are made on this thread only: two threads making one would make two files.
        writer = self._scalars("train")
        snapshot = read_variables(variables)
        self._background().submit(self._write_histograms, writer, tags, snapshot, epoch)

    @staticmethod
    def _write_histograms(
        writer: ScalarWriter, tags: list[str], snapshot: list[Any], epoch: int
    ) -> None:
        for tag, values in zip(tags, snapshot, strict=True):
            writer.write_summary(histogram_summary(tag, np.asarray(values)), step=epoch)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if self.in_stack:  # in a stack: after_stack, once every callback has run
            self._pending_epoch = (epoch, logs or {})
            return
        self._record_epoch(epoch, logs)

    def after_stack(self, hook: str, index: int | None, logs: dict[str, Any]) -> None:
        """Write what the whole stack left in the logs (called by the :class:`Stack`)."""
        if hook == "on_epoch_end":
            pending, self._pending_epoch = self._pending_epoch, None
            if pending is not None:
                self._record_epoch(pending[0], logs)
        elif hook == "on_test_end":
            self._record_test(logs)
        elif hook == "on_train_end":
            self._end_of_training()

    def _record_epoch(self, epoch: int, logs: dict[str, Any] | None) -> None:
        self._submit_rows()
        if epoch <= self._last_epoch:
            return  # written by the process this rerun resumes
        numeric = {k: v for k, v in (logs or {}).items() if is_number(v)}
        super().on_epoch_end(epoch, numeric)
        if not self._hparams_metrics_written:
            self._write_hparams_config(numeric)

    def _log_epoch_metrics(self, epoch: int, logs: dict[str, Any]) -> None:
        # Keras writes every val_* key under validation/ without its prefix: val_time would be
        # validation's epoch_time, beside train's epoch_time that is another thing. Only the
        # validation values of a training key lose the prefix; val_time stays epoch_val_time.
        if not logs:
            return
        train = {k: v for k, v in logs.items() if not k.startswith("val_")}
        validation = {
            (k[4:] if k[4:] in logs else k): v for k, v in logs.items() if k.startswith("val_")
        }
        train = self._collect_learning_rate(train)  # Keras's epoch_learning_rate
        # Keras's tags (epoch_<key>) under train/ and validation/, written off this thread.
        thread = self._background()
        if train:
            thread.submit(self._scalars("train").write, [(epoch, train)], "epoch_")
        if validation:
            thread.submit(self._scalars("validation").write, [(epoch, validation)], "epoch_")

    def _submit_rows(self) -> None:
        """Hand the buffered batch rows to the background thread."""
        rows, self._batch_rows = self._batch_rows, []
        # steps a previous process of this job already wrote (resumed from an older backup)
        rows = [(step, row) for step, row in rows if step > self._last_step]
        if rows:
            self._background().submit(self._write_rows, self._scalars("train"), rows)

    @staticmethod
    def _write_rows(writer: ScalarWriter, rows: list[tuple[int, dict[str, Any]]]) -> None:
        rows = [(step, row) for step, row in rows if row]
        if rows:
            writer.write(rows, prefix="batch_")

    def _write_hparams_config(self, logs: dict[str, Any]) -> None:
        if not self._session_started:
            return
        from tensorboard.plugins.hparams import api as hp

        self._hparams_metrics_written = True
        metrics = [
            hp.Metric(f"epoch_{k[4:]}", group="validation", display_name=k)
            for k in sorted(logs)
            if k.startswith("val_")
        ] + [
            hp.Metric(f"epoch_{k}", group="train", display_name=k)
            for k in ("loss", "accuracy")
            if k in logs
        ]
        values = {k: _hparam_value(v) for k, v in self._hparams().items()}
        config = hp.hparams_config_pb(hparams=[hp.HParam(k) for k in values], metrics=metrics)
        self._scalars(".").write_summary(config)

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        if not self.in_stack:  # in a stack: after_stack, once every on_train_end has run
            self._end_of_training()

    def _end_of_training(self) -> None:
        self._in_fit = False
        if self._pending_epoch is not None:  # a callback after us raised at epoch end
            self._record_epoch(*self._pending_epoch)
            self._pending_epoch = None
        self._submit_rows()  # a fit stopped mid-epoch
        self._drain()
        if self._is_tracing:
            self._stop_trace()
        for writer in self._writers.values():
            writer.flush()
        for writer in self._scalar_writers.values():
            writer.flush()
        if self.context is None:  # plain model.fit(): nobody will call on_job_end
            self.on_job_end(JobStatus.FINISHED)

    # ------------------------------------------------------------------ evaluate / predict

    def on_test_begin(self, logs: dict[str, Any] | None = None) -> None:
        pass  # Keras' version pushes a writer only for batch-level summaries: none here

    def on_test_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        pass

    def on_test_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        pass

    def on_test_end(self, logs: dict[str, Any] | None = None) -> None:
        if not self.in_stack:  # in a stack: after_stack, once every callback has run
            self._record_test(logs)

    def _record_test(self, logs: dict[str, Any] | None) -> None:
        if self._in_fit:
            return  # validation: written with the epoch, under validation/
        numeric = {k: v for k, v in (logs or {}).items() if is_number(v)}
        self._scalars("test").write([(self._final_step, numeric)], prefix="test_")
        self._write_confusion()

    def _write_confusion(self) -> None:
        if self._confusion_written or self.context is None or self.context.test_data is None:
            return
        self._confusion_written = True
        try:
            matrix = confusion_on_test_split(self.context, self.model)
            if matrix is None:
                return
            image = plots.figure_to_array(plots.confusion_figure(matrix, self.context.class_names))
            with self._tf_writer("test").as_default():
                self.summary.image("confusion_matrix", image[None], step=self._final_step)
        except Exception as exc:
            log.warning("TensorBoard: confusion matrix failed: %s: %s", type(exc).__name__, exc)

    def on_predict_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._predict_t0 = time.perf_counter()

    def on_predict_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        pass

    def on_predict_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        pass

    def on_predict_end(self, logs: dict[str, Any] | None = None) -> None:
        latency = time.perf_counter() - getattr(self, "_predict_t0", time.perf_counter())
        self._scalars("test").write([(self._final_step, {"predict_latency_s": latency})])

    # ------------------------------------------------------------------ job end

    def on_job_end(self, status: JobStatus) -> None:
        if self._closed:
            return
        self._closed = True
        status = JobStatus.of(status)
        try:
            if self._in_fit:  # fit ended by an exception: write what it buffered
                self._end_of_training()
            if status is JobStatus.FINISHED:
                self._write_confusion()
            if self._session_started:
                from tensorboard.plugins.hparams import api_pb2
                from tensorboard.plugins.hparams import summary as hparams_summary

                finished = status is JobStatus.FINISHED
                code = api_pb2.STATUS_SUCCESS if finished else api_pb2.STATUS_FAILURE
                self._scalars(".").write_summary(hparams_summary.session_end_pb(code))
        except Exception as exc:  # on_job_end must not raise
            log.warning("TensorBoard: end-of-job summaries failed: %s: %s", type(exc).__name__, exc)
        if self._thread is not None:
            self._thread.close()
            self._thread = None
        for writer in [*self._writers.values(), *self._scalar_writers.values()]:
            try:
                writer.close()
            except Exception as exc:
                log.warning("TensorBoard: closing a writer failed: %s", exc)
