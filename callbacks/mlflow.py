"""MLflow logging for a trainkit job: params, per-step metrics, plots, the model, the run's end.

Stack entry (``conf/callbacks/<stack>.yaml``)::

    mlflow:
      _target_: callbacks.mlflow.MLflowLogger
      log_every_n_steps: 1     # training metrics and the LR every N optimizer steps
      log_model: null          # null: ctx.tracking.log_model decides
      log_plots: true          # training curves, LR, confusion matrix (PNG)

Where things go:

* the run: experiment ``ctx.tracking.experiment``; its id is kept in ``<run_dir>/mlflow_run_id``
  and a restarted job resumes it, continuing from the last logged step. In a Hydra multirun each
  job is a child of one parent run per sweep (tag ``trainkit.sweep_dir``). A resumed run is
  opened in ``on_train_begin`` (its last step places the new points); a new one by the writer
  thread once the first steps are over, so importing MLflow and opening the store run beside the
  next steps instead of delaying the first (the points wait in memory until the run exists).
* steps: the global optimizer step, 1-based (``epoch * steps_per_epoch + batch + 1``). Per-step
  training metrics keep Keras' names (``loss``, ``accuracy``), epoch metrics are logged at the
  epoch's last step (``val_*`` and the ``epoch`` index), a standalone ``evaluate`` after ``fit``
  as ``test_*`` at the final step, ``predict`` as ``predict_*``. Keys that measure the machine
  rather than the model (``RunContext.system_keys``: Timing's ``step_time`` and the like,
  ``predict_latency_s``) are filed under ``system/``, the run page's System metrics tab, so its
  Model metrics open on loss, accuracy and the learning rate.
* what is recorded: every number in the batch and epoch logs as the whole stack left them. In a
  stack (:func:`trainkit.stack.build_stack`) the logger records in ``after_stack``, after every
  callback ran the hook, so keys written by callbacks placed after it (``best_epoch`` of early
  stopping, a user's own) are logged too; in a plain ``model.fit(callbacks=[...])`` it records
  in its own hook (place it last there).
* the model: logged once training is over, after every callback's ``on_train_end`` (early
  stopping has restored the best weights by then), so it is the model that ``evaluate`` measures
  for the ``test_*`` metrics. It is a TensorFlow SavedModel in the ``keras`` flavor:
  ``mlflow.keras.load_model(uri).serve(x)`` and ``mlflow.pyfunc.load_model(uri).predict(x)``
  work in any Python with TensorFlow, without trainkit. It is written in a background thread
  while the job evaluates and predicts. When the best checkpoint holds the same weights (early
  stopping restores the best epoch of the checkpoint's own metric) it is not uploaded a second
  time: the tag ``trainkit.best_checkpoint`` says the logged model is it.
* params: the resolved config (secrets redacted, see :mod:`trainkit.tracking.flatten`), the
  resolved ``run.precision`` and ``run.strategy``; a resumed run keeps its first values (MLflow
  refuses to change a param) and logs the ones that changed as ``resumed.<key>`` params.
* the training loop only appends a tuple a step (the step, one ``time.time()`` read, a reference
  to the logs dict every callback of the step receives, the learning rate read once an epoch)
  to a list; the list goes to the writer thread every ``flush_interval`` seconds (when the
  thread asks, at the next step) and at epoch end. The thread turns the rows into MLflow
  points, reading the logs once the step is over, and writes them with ``log_batch``. If the
  store fails the points go to ``<run_dir>/mlflow_spool.jsonl`` (one warning) and are written
  when it answers again; a job never fails because of MLflow.
* ``steps_per_execution = k > 1``: Keras calls the batch hooks once per ``k`` steps; the stack
  hands the logger the other steps' metrics too (:mod:`trainkit.step_rows`, read in the same
  host round trip), so every step still gets its point.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import numpy as np

from callbacks.base import TrainkitCallback
from trainkit.context import BestCheckpoint, JobStatus, StopsTraining
from trainkit.tracking import plots
from trainkit.tracking.evaluation import confusion_on_test_split
from trainkit.tracking.flatten import (
    REDACTED,
    is_secret_key,
    metric_key,
    redact_config,
    redact_uri,
    to_params,
)
from trainkit.tracking.spool import SPOOL_NAME, Spool
from trainkit.tracking.store import (
    RunSpec,
    TrackedRun,
    default_run_name,
    log_keras_model,
    probe,
    run_description,
)
from trainkit.tracking.store import unreachable_message as _unreachable
from trainkit.tracking.store_process import HELPER_AT_STEPS
from trainkit.tracking.summary import model_summary
from trainkit.tracking.sweep import (
    OPTIMIZED_METRIC_TAG,
    OPTIMIZED_VALUE_TAG,
    detect_sweep,
    git_commit,
    job_command,
)
from trainkit.tracking.writer import BackgroundWriter

log = logging.getLogger("trainkit.tracking")

ARTIFACT_DIR = "mlflow"  # local copies of what the run gets, under the run directory
_UNREAD = object()  # the learning rate of this epoch's rows is not read yet


class MLflowLogger(TrainkitCallback):
    """Logs the job to MLflow; see the module docstring for what goes where.

    Args:
        log_every_n_steps: training metrics and the learning rate every N optimizer steps
            (with ``steps_per_execution > 1``, at the first hook call past each multiple of N).
        log_model: log the trained model (signature + input example); ``None`` follows
            ``ctx.tracking["log_model"]`` (default True).
        log_plots: training curves, learning rate and confusion matrix as PNG artifacts.
        log_checkpoint: upload the best checkpoint of the stack's checkpoint callback.
        flush_interval: seconds between background writes.
        flush_timeout: how long ``on_job_end`` waits for the store before spooling the rest.
    """

    chief_only = True  # multi-worker: only the chief writes (trainkit.stack.Stack)

    # Batch hooks only append to a list: safe on Keras' async dispatch thread pool, which keeps
    # the training loop from waiting on every step's logs (used where a GPU is visible).
    async_safe = True
    uses_clock = True
    # The batch rows keep a reference to the step's logs dict, read by the writer thread once
    # the step is over: the stack need not call after_stack after each batch.
    after_stack_batches = False
    system_keys = frozenset({"predict_count", "predict_latency_s", "predict_ms_per_sample"})

    def __init__(
        self,
        log_every_n_steps: int = 1,
        log_model: bool | None = None,
        log_plots: bool = True,
        log_checkpoint: bool = True,
        flush_interval: float = 2.0,
        flush_timeout: float = 30.0,
    ) -> None:
        super().__init__()
        if log_every_n_steps < 1:
            raise ValueError(f"log_every_n_steps must be >= 1, got {log_every_n_steps}")
        self.log_every_n_steps = int(log_every_n_steps)
        self.log_model = log_model
        self.log_plots = log_plots
        self.log_checkpoint = log_checkpoint
        self.flush_interval = flush_interval
        self.flush_timeout = flush_timeout

        self.run: TrackedRun | None = None
        self.writer: BackgroundWriter | None = None
        self.model_uri: str | None = None
        self._fit_params: dict[str, Any] = {}
        self._in_fit = False
        self._ended = False
        self._model_pending = False
        self._model_thread: threading.Thread | None = None
        self._model_args: tuple[np.ndarray, np.ndarray, int] | None = None
        self._checkpoint_is_model = False
        self._confusion_logged = False
        # per-step rows (step, time.time(), logs, lr) not yet handed to the writer thread
        self._rows: list[tuple[int, float, dict[str, Any], float | None]] = []
        self._last_row: tuple[int, float, dict[str, Any], float | None] | None = None
        self._pending_epoch: tuple[int, int, dict[str, Any]] | None = None
        # steps: the stack's clock, shifted after a resumed run's last step
        self._offset = 0
        self._skip_until = 0
        self._placed = False
        self._string_logs: dict[str, str] = {}
        self._history: list[tuple[int, dict[str, float]]] = []
        self._lr_points: list[tuple[int, float]] = []
        # the rate for this epoch's rows; _UNREAD until the epoch's first step reads it
        self._lr_value: Any = _UNREAD
        # predict
        self._predict_t0 = 0.0
        self._predict_n = 0
        self._predict_counts: np.ndarray | None = None
        self._test_logs: dict[str, float] = {}

    # ------------------------------------------------------------------ Keras: model/params

    def set_model(self, model: Any) -> None:
        super().set_model(model)

    def set_params(self, params: dict[str, Any]) -> None:
        # evaluate() and predict() call this again with their own steps: fit's are kept apart.
        super().set_params(params)

    @property
    def _step(self) -> int:
        return self.clock.step + self._offset

    @property
    def _final_step(self) -> int:
        return self.clock.final_step + self._offset

    # ------------------------------------------------------------------ run lifecycle

    @property
    def tracking(self) -> dict[str, Any]:
        return dict(self.context.tracking) if self.context is not None else {}

    def _uri(self) -> str:
        uri = self.tracking.get("uri")
        if not uri:
            import mlflow

            uri = mlflow.get_tracking_uri()
        return str(uri)

    def _spec(self) -> RunSpec:
        tracking = self.tracking
        sweep = detect_sweep(self.context)
        tags = {str(k): str(v) for k, v in (tracking.get("tags") or {}).items()}
        run_name = tracking.get("run_name")
        if sweep is not None:
            overrides = redact_uri(sweep.overrides or "")
            tags["trainkit.job_num"] = str(sweep.job_num)
            if overrides:
                tags["trainkit.overrides"] = overrides
            if not run_name:
                run_name = f"#{sweep.job_num} {overrides}".strip()[:250]
        ctx = self.context
        model = ctx.model_name if ctx is not None else None
        stack = ctx.stack if ctx is not None else None
        if "mlflow.note.content" not in tags:
            data = ((ctx.config or {}).get("data") or {}) if ctx is not None else {}
            data_name = data.get("name") if isinstance(data, dict) else None
            tags["mlflow.note.content"] = run_description(model, data_name, stack, job_command())
        return RunSpec(
            uri=self._uri(),
            experiment=str(tracking.get("experiment") or "trainkit"),
            run_name=run_name or None,
            name_hint=default_run_name(model or "run", stack or ""),
            tags=tags,
            run_dir=str(self.run_dir.resolve()),
            sweep_dir=sweep.sweep_dir if sweep else None,
            system_metrics=bool(tracking.get("system_metrics", False)),
            artifact_location=tracking.get("artifact_location") or None,
        )

    def _start(self) -> None:
        """Open (or resume) the run; if the store does not answer, spool until it does."""
        spec = self._spec()
        self.run = TrackedRun(spec)
        spool = Spool(self.run_path(SPOOL_NAME), spec=spec.to_dict())
        self.writer = BackgroundWriter(self.run, spool, interval=self.flush_interval)
        # the stack's (this logger's own among them), and ours outside a stack
        stack = self.context.system_keys if self.context is not None else frozenset()
        self.writer.rename = {key: f"system/{key}" for key in stack | self.system_keys}
        self.writer.convert = self._rows_to_points
        self.writer.on_open = self._announce
        if not probe(spec.uri):
            log.warning(_unreachable(spec.uri))
            self.writer.down = True
            self.writer.warned = True
        elif self.run.resuming:  # its last step places this job's first points: open it now
            try:
                self.run.open()
            except Exception as exc:
                log.warning("%s (%s: %s)", _unreachable(spec.uri), type(exc).__name__, exc)
                self.writer.down = True
                self.writer.warned = True
        if spool.exists():  # a previous process of this job left points: replay them first
            self.writer.down = True
        self.writer.start()
        if self.run.is_open:
            self._announce()
        else:
            # A new run: the writer thread imports MLflow, opens the store and creates the run
            # once the first steps are over, beside the next ones (seconds of start-up); the
            # points wait in memory meanwhile, as they would for a store slow to answer.
            self.writer.open_after_first_rows()

    def _announce(self) -> None:
        assert self.run is not None
        log.info(
            "MLflow run %s (%s) in %s",
            self.run.run_id,
            "resumed" if self.run.resumed else "new",
            redact_uri(self.run.spec.uri),
        )

    def _ensure_started(self) -> bool:
        if self.writer is None and not self._ended:
            try:
                self._start()
            except Exception as exc:  # never stop training for MLflow
                log.warning("MLflow logging is off for this job: %s: %s", type(exc).__name__, exc)
                self._ended = True
        return self.writer is not None and not self._ended

    # ------------------------------------------------------------------ fit

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._in_fit = True
        self._lr_value = _UNREAD  # a new fit may start with a new rate
        self._wait_for_model()  # a second fit must not change the weights being written
        self._fit_params = {
            "fit.epochs": self.params.get("epochs"),
            "fit.steps_per_epoch": self.clock.steps_per_epoch,
            "fit.steps_per_execution": self.clock.steps_per_execution,
        }
        if not self._ensure_started():
            return
        self._queue_params()
        steps = (self.clock.steps_per_epoch or 0) * int(self.params.get("epochs") or 0)
        if steps // max(1, self.log_every_n_steps) >= HELPER_AT_STEPS and self.writer is not None:
            self.writer.submit("h", None)  # a long fit: the helper starts while the step traces

    def _queue_params(self) -> None:
        assert self.writer is not None
        params: dict[str, Any] = dict(self._fit_params)
        ctx = self.context
        if ctx is not None and ctx.batch_size:
            params["fit.batch_size"] = ctx.batch_size
        if ctx is not None:
            # What the job resolved (precision=auto, the distribution strategy).
            params["run.precision"] = ctx.precision or keras.mixed_precision.global_policy().name
            params["run.strategy"] = ctx.strategy
        model = self.model
        if model is not None and model.built:
            trainable = int(sum(np.prod(w.shape) for w in model.trainable_weights))
            total = int(model.count_params())
            params["model.params.trainable"] = trainable
            params["model.params.total"] = total
            params["model.params.non_trainable"] = total - trainable
            self.writer.submit("a", str(self._write_summary()), None)
        config = self.context.config if self.context is not None else {}
        merged = {**to_params(config), **{k: str(v) for k, v in params.items()}}
        self.writer.submit("p", merged)

    def _write_summary(self) -> Path:
        path = self.run_path(ARTIFACT_DIR, "model_summary.txt")
        path.write_text(model_summary(self.model), encoding="utf-8")  # full width, not 80 cols
        return path

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        # A plain rate variable changes between epochs (ReduceLROnPlateau, fine-tuning): read
        # it again at this epoch's first step, after every callback's on_epoch_begin.
        self._lr_value = _UNREAD
        if self._placed:
            return
        # Once per job: where the clock's steps land in the store. The clock already continues
        # a second fit after the first; a resumed run continues after the store's last step.
        self._placed = True
        last = self.run.last_step if self.run is not None and self.run.resumed else 0
        if last and self.clock.step == 0:
            # trained anew on a run that has a history: it goes on after the last step
            # instead of writing steps 1, 2 ... again
            self._offset = last
        elif last:
            # resumed at initial_epoch (or within an epoch): steps the store already has are
            # not logged twice
            self._skip_until = last

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        # Hot path: one clock read and an append; no I/O, no locks, no conversion. The row
        # keeps a reference to the logs: callbacks after us still add keys to this dict, and
        # the writer thread reads it once the step is over.
        writer = self.writer
        if writer is None or logs is None:
            return
        every = self.log_every_n_steps
        if every > 1 and not self.clock.due(every):
            return
        if writer.wants_rows:  # the rows before this step are final: hand them over
            self._hand_over()
        lr = self._lr_value
        if lr is _UNREAD and "lr" not in logs:
            lr = self._learning_rate()
        row = (self.clock.step + self._offset, time.time(), logs, lr)
        self._rows.append(row)
        self._last_row = row

    def on_train_steps(self, steps: range, rows: list[dict[str, float]]) -> None:
        """The earlier steps of an execution under ``steps_per_execution > 1``
        (:class:`trainkit.context.TakesStepRows`): a row each, as the batch hook makes for the
        last one. Their times are spread evenly since the previous row."""
        writer = self.writer
        if writer is None or not rows:
            return
        lr = self._lr_value
        if lr is _UNREAD:
            lr = self._learning_rate()
        now = time.time()
        before = self._last_row[1] if self._last_row is not None else now
        gap = (now - before) / (len(rows) + 1)
        every = self.log_every_n_steps
        offset = self._offset
        append = self._rows.append
        for i, (step, row) in enumerate(zip(steps, rows, strict=True), start=1):
            if every > 1 and step % every:
                continue
            append((step + offset, before + gap * i, row, lr))

    def _hand_over(self) -> None:
        """Give the buffered rows to the writer thread (no waiting)."""
        rows, self._rows = self._rows, []
        if rows and self.writer is not None:
            self.writer.add_rows(rows)

    def hand_over_tracking(self) -> Callable[[float], bool]:
        """Give the buffered rows to the writer now; the returned ``wait(timeout)`` waits until
        they are in the store (``trainkit.context.BuffersTracking``)."""
        self._hand_over()
        return self.writer.flush if self.writer is not None else _written

    def after_stack(self, hook: str, index: int | None, logs: dict[str, Any]) -> None:
        """Record what the whole stack left in the logs (called by the :class:`Stack`)."""
        if hook == "on_epoch_end":
            pending, self._pending_epoch = self._pending_epoch, None
            if pending is not None:
                self._record_epoch(pending[0], pending[1], logs)
        elif hook == "on_test_end":
            self._record_test(logs)
        elif hook == "on_train_end":
            self._end_of_training()

    def _flush_pending(self) -> None:
        """Logs of a hook whose after_stack never came (a callback after us raised), and the
        rows not yet handed over."""
        self._hand_over()
        epoch, self._pending_epoch = self._pending_epoch, None
        if epoch is not None:
            self._record_epoch(*epoch)

    def _rows_to_points(self, rows: list[tuple[int, float, dict[str, Any], Any]]) -> None:
        """On the writer thread: the steps' rows as MLflow points, in the writer's buffer."""
        assert self.writer is not None
        append = self.writer.points.append
        skip_until = self._skip_until
        lr_points = self._lr_points
        for step, wall, logs, lr in rows:
            if not logs or step <= skip_until:
                continue
            ms = int(wall * 1000)
            for key, value in list(logs.items()):
                if type(value) is float:
                    append((key, value, step, ms))
                else:
                    self._other_value(key, value, step, ms)
            if "lr" in logs:
                lr_points.append((step, logs["lr"]))
            elif lr is not None and lr is not _UNREAD:
                append(("lr", lr, step, ms))
                lr_points.append((step, lr))

    def _other_value(self, key: str, value: Any, step: int, ms: int) -> None:
        if isinstance(value, bool | int | float | np.number):
            self.writer.points.append((key, float(value), step, ms))
        elif isinstance(value, str) and self._string_logs.get(key) != value:
            self._string_logs[key] = value
            text = REDACTED if is_secret_key(key) else redact_uri(value)
            self.writer.submit("t", {metric_key(key): text})

    def _learning_rate(self) -> float | None:
        """The optimizer's rate, for steps whose logs have no ``lr``.

        A plain (variable) rate changes between epochs (``ReduceLROnPlateau``, fine-tuning;
        ``LRSchedule`` writes ``lr`` into the logs itself), so it is read at the first step of
        each epoch and kept for the epoch's rows: reading a variable is an eager op, tens of
        microseconds that every step would pay. A ``LearningRateSchedule``'s rate is read at
        every step.
        """
        optimizer = getattr(self.model, "optimizer", None)
        optimizer = getattr(optimizer, "inner_optimizer", optimizer)  # LossScaleOptimizer
        per_step = not isinstance(getattr(optimizer, "_learning_rate", None), keras.Variable)
        try:
            value: float | None = float(np.asarray(optimizer.learning_rate))
        except (AttributeError, TypeError, ValueError):
            value = None
        if not per_step:
            self._lr_value = value
        return value

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        # The clock stands at the epoch's last step (or where a stopped epoch stopped).
        if self.in_stack:
            self._pending_epoch = (epoch, self._step, logs or {})
            return
        self._record_epoch(epoch, self._step, logs)

    def _record_epoch(self, epoch: int, step: int, logs: dict[str, Any] | None) -> None:
        logs = logs or {}
        numeric = {}
        for key, value in logs.items():
            if isinstance(value, bool | int | float | np.number):
                numeric[key] = float(value)
        self._history.append((epoch, numeric))
        if self.writer is None or step < self._skip_until:
            return
        self._hand_over()  # the epoch's rows first: every batch dict is final by now
        ms = int(time.time() * 1000)
        append = self.writer.points.append
        last = self._last_row
        # the batch row logged these keys at this step with the same values
        already = last[2].keys() if last is not None and last[0] == step and last[2] else ()
        if self._skip_until and step == self._skip_until and self.run is not None:
            # resumed at this epoch's end (stopped during its validation): the store has its
            # last batch's keys here, not yet the epoch's own
            already = self.run.last_keys
            if "epoch" in already:
                return
        for key, value in logs.items():
            if key in numeric:
                if key not in already:  # the batch hook logged the same value at this step
                    append((key, numeric[key], step, ms))
            else:
                self._other_value(key, value, step, ms)
        append(("epoch", float(epoch), step, ms))

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        if not self.in_stack:  # in a stack: after_stack, once every on_train_end has run
            self._end_of_training()

    def _end_of_training(self) -> None:
        self._in_fit = False
        self._flush_pending()
        if self.writer is None:
            return
        try:
            self._train_end()
        except Exception as exc:
            log.warning("MLflow: end-of-training logging failed: %s: %s", type(exc).__name__, exc)
        if self.context is None:  # plain model.fit(): nobody will call on_job_end
            self.on_job_end(JobStatus.FINISHED)

    def _train_end(self) -> None:
        assert self.writer is not None
        ctx = self.context
        tags: dict[str, str] = {"trainkit.final_step": str(self._final_step)}
        if ctx is not None:
            tags["trainkit.model"] = ctx.model_name
            tags["trainkit.callbacks"] = ctx.stack
        git = git_commit()
        if git is not None:
            tags["trainkit.git_commit"] = git[0]
            tags["trainkit.git_dirty"] = str(git[1]).lower()
        self.writer.convert_rows()  # a stop_reason in the batch logs is read there
        reason = self._stop_reason()
        if reason:
            tags["trainkit.stop_reason"] = reason
        self.writer.submit("t", tags)
        if ctx is not None and ctx.config:
            import yaml

            path = self.run_path(ARTIFACT_DIR, "config.yaml")
            config = redact_config(ctx.config)  # the same secrets as the params
            path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
            self.writer.submit("a", str(path), None)
        if self.log_plots:
            self.writer.convert_rows()  # every step's rate is in _lr_points
            self._lr_points.sort(key=lambda point: point[0])
            for path in (
                plots.training_curves(
                    self._history, self.run_path(ARTIFACT_DIR, "plots", "training_curves.png")
                ),
                plots.learning_rate(
                    self._lr_points, self.run_path(ARTIFACT_DIR, "plots", "learning_rate.png")
                ),
            ):
                if path is not None:
                    self.writer.submit("a", str(path), "plots")
        log_model = self.log_model
        if log_model is None:
            log_model = bool(self.tracking.get("log_model", True))
        log_model = log_model and self.model is not None
        best = self._best_checkpoint() if self.log_checkpoint else None
        self._checkpoint_is_model = log_model and best is not None and self._restored_best(best)
        if best is not None and not self._checkpoint_is_model:
            self.writer.submit("a", str(best), "checkpoints")
        if log_model:
            self._model_pending = True
            self._start_model_logging()

    def _stop_reason(self) -> str | None:
        ctx = self.context
        for cb in ctx.find_all(StopsTraining) if ctx is not None else []:
            if isinstance(cb.stop_reason, str) and cb.stop_reason:
                return cb.stop_reason
        for cb in ctx.find_all(keras.callbacks.EarlyStopping) if ctx is not None else []:
            stopped = cb.stopped_epoch
            if isinstance(stopped, int) and stopped > 0:  # Keras's: no stop_reason
                return f"{type(cb).__name__} stopped training at epoch {stopped}"
        return self._string_logs.get("stop_reason")

    def _best_checkpoint(self) -> Path | None:
        checkpoint = self.context.find(BestCheckpoint) if self.context is not None else None
        path = checkpoint.best_model_path if checkpoint is not None else None
        return Path(path) if path and Path(path).exists() else None

    def _restored_best(self, best: Path) -> bool:
        """Whether the model now holds the weights of ``best``: an early stopping that
        restores the best weights, on the checkpoint's metric, restored the checkpoint's epoch
        (``epoch=NNN-`` in its name, 1-based)."""
        ctx = self.context
        checkpoint = ctx.find(BestCheckpoint) if ctx is not None else None
        monitor = getattr(checkpoint, "monitor", None)
        saved = re.search(r"epoch=(\d+)", best.name)
        if ctx is None or monitor is None or saved is None:
            return False
        for stopper in ctx.find_all(keras.callbacks.EarlyStopping):
            best_epoch = getattr(stopper, "best_epoch", None)
            if (
                stopper.restore_best_weights
                and stopper.monitor == monitor
                and best_epoch is not None
                and int(best_epoch) + 1 == int(saved.group(1))
            ):
                return True
        return False

    def _start_model_logging(self) -> None:
        """Log the model in a background thread while the job evaluates and predicts.

        What the thread needs from the model's computation (the example's prediction, for the
        signature) is computed here, on the training thread; the thread only writes.
        """
        example = self._input_example()
        if example is None:
            log.warning("MLflow: no input example for the model (no test data, no sample images)")
            self._model_pending = False
            return
        output = self.model.predict(example, verbose=0)
        self._model_args = (example, output, self._final_step)
        self._model_thread = threading.Thread(
            target=self._log_model_now,
            args=self._model_args,
            name="trainkit-mlflow-model",
            daemon=True,
        )
        self._model_thread.start()

    def _wait_for_model(self) -> None:
        thread, self._model_thread = self._model_thread, None
        if thread is not None:
            thread.join()

    def _log_model_now(self, example: np.ndarray, output: np.ndarray, step: int) -> None:
        """Log the model if the store is there; otherwise on_job_end saves it locally."""
        assert self.writer is not None and self.run is not None
        if not self._model_pending or not self.writer.flush(self.flush_timeout):
            return
        if self.writer.down or not self.run.is_open:
            return
        started = time.perf_counter()
        try:
            self.model_uri = log_keras_model(self.run, self.model, example, output, step)
        except Exception as exc:
            log.warning("MLflow: logging the model failed: %s: %s", type(exc).__name__, exc)
            self._model_pending = False
            return
        self._model_pending = False
        tags = {"trainkit.model_uri": self.model_uri}
        if self._checkpoint_is_model:
            tags["trainkit.best_checkpoint"] = f"{self.model_uri} (the same weights)"
        self.writer.submit("t", tags)
        elapsed = time.perf_counter() - started
        log.info("MLflow: model logged as %s in %.1fs", self.model_uri, elapsed)

    def _input_example(self) -> np.ndarray | None:
        ctx = self.context
        if ctx is not None and ctx.test_data is not None:
            for batch in ctx.test_data.take(1):
                x = batch[0] if isinstance(batch, tuple | list) else batch
                return np.asarray(x)[:1]  # one image: MLflow stores it twice, as JSON
        if ctx is not None and ctx.sample_images is not None:
            return np.asarray(ctx.sample_images, dtype=np.float32)[:1]
        shape = getattr(self.model, "input_shape", None)
        if isinstance(shape, tuple) and all(d is not None for d in shape[1:]):
            return np.zeros((1, *shape[1:]), dtype=np.float32)
        return None

    # ------------------------------------------------------------------ evaluate

    def on_test_begin(self, logs: dict[str, Any] | None = None) -> None:
        pass  # validation inside fit is logged with the epoch; a standalone evaluate at its end

    def on_test_end(self, logs: dict[str, Any] | None = None) -> None:
        if not self.in_stack:  # in a stack: after_stack, once every callback has run
            self._record_test(logs)

    def _record_test(self, logs: dict[str, Any] | None) -> None:
        if self._in_fit or not self._ensure_started():
            return
        assert self.writer is not None
        step = self._final_step
        ms = int(time.time() * 1000)
        for key, value in (logs or {}).items():
            if isinstance(value, bool | int | float | np.number):
                self._test_logs[key] = float(value)
                # Timing's test_time is already prefixed: don't make it test_test_time.
                name = key if key.startswith("test_") else f"test_{key}"
                self.writer.points.append((name, float(value), step, ms))
        self._log_confusion()

    def _log_confusion(self) -> None:
        if self._confusion_logged or self.context is None or self.context.test_data is None:
            return
        self._confusion_logged = True
        try:
            matrix = confusion_on_test_split(self.context, self.model)
        except Exception as exc:
            log.warning("MLflow: confusion matrix failed: %s: %s", type(exc).__name__, exc)
            return
        if matrix is None:
            return
        names = self.context.class_names
        data = {"class_names": list(names), "matrix": matrix.tolist()}
        path = self.run_path(ARTIFACT_DIR, "confusion_matrix.json")
        path.write_text(json.dumps(data), encoding="utf-8")
        self.writer.submit("a", str(path), None)
        if self.log_plots:
            png = plots.confusion_matrix(
                matrix, names, self.run_path(ARTIFACT_DIR, "plots", "confusion_matrix.png")
            )
            self.writer.submit("a", str(png), "plots")

    # ------------------------------------------------------------------ predict

    def on_predict_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._predict_t0 = time.perf_counter()
        self._predict_n = 0
        self._predict_counts = None

    def on_predict_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        # Keras 3 passes {"outputs": <this execution's predictions>} (a numpy array by now).
        outputs = (logs or {}).get("outputs")
        if not isinstance(outputs, np.ndarray) or outputs.ndim != 2:
            return
        n, width = outputs.shape
        classes = outputs.argmax(axis=1) if width > 1 else (outputs[:, 0] > 0.5).astype(int)
        counts = np.bincount(classes, minlength=max(width, 2))
        if self._predict_counts is None:
            self._predict_counts = counts
        else:
            self._predict_counts = self._predict_counts + counts
        self._predict_n += n

    def on_predict_end(self, logs: dict[str, Any] | None = None) -> None:
        latency = time.perf_counter() - self._predict_t0
        if not self._ensure_started():
            return
        assert self.writer is not None
        step = self._final_step
        ms = int(time.time() * 1000)
        points = self.writer.points
        points.append(("predict_count", float(self._predict_n), step, ms))
        points.append(("predict_latency_s", latency, step, ms))
        if self._predict_n:
            points.append(("predict_ms_per_sample", 1000 * latency / self._predict_n, step, ms))
        if self._predict_counts is not None:
            # One artifact, not a chart per class ahead of loss and accuracy on the run page.
            names = self.context.class_names if self.context is not None else []
            counts = {
                (names[i] if i < len(names) else str(i)): int(count)
                for i, count in enumerate(self._predict_counts.tolist())
            }
            path = self.run_path(ARTIFACT_DIR, "predict_class_counts.json")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(counts, indent=1), encoding="utf-8")
            self.writer.submit("a", str(path), None)

    # ------------------------------------------------------------------ job end

    def on_job_end(self, status: JobStatus) -> None:
        if self._ended:
            return
        self._ended = True
        status = JobStatus.of(status)
        writer, run = self.writer, self.run
        if writer is None or run is None:
            return
        try:
            self._flush_pending()
            if status is JobStatus.FINISHED:
                self._log_confusion()
                self._tag_optimized_metric()
            self._wait_for_model()
            if self._model_pending and self._model_args is not None:
                self._log_model_now(*self._model_args)  # the store may be back by now
            if self._model_pending:
                self._save_model_locally()
            writer.close(self.flush_timeout)
            run.close_helper()  # every point is written or spooled: the helper has no more
            ended = False
            if run.is_open and not writer.down:
                try:
                    self._tag_error(run, status)
                    run.end(status)
                    ended = True
                except Exception as exc:
                    log.warning("MLflow: ending the run failed: %s: %s", type(exc).__name__, exc)
            if not ended:
                writer.spool.add_end(status)
            left = Spool.count_points(writer.spool.read()) if writer.spool.exists() else 0
            if writer.spool.exists():
                log.warning(
                    "MLflow store %s did not answer before the job ended: %d points kept in %s; "
                    "write them with: python -m trainkit.tracking.replay %s",
                    redact_uri(run.spec.uri),
                    left,
                    writer.spool.path,
                    self.run_dir,
                )
            elif writer.replayed:
                log.info(
                    "MLflow: %d spooled points written after the store came back", writer.replayed
                )
        except Exception as exc:  # on_job_end must not raise
            log.warning("MLflow: on_job_end failed: %s: %s", type(exc).__name__, exc)

    def _tag_optimized_metric(self) -> None:
        """The value a sweeper optimizes (``optimized_metric``), as the job computes it: what a
        sweep's parent run compares its children by."""
        from trainkit.job import monitored_value

        config = self.context.config if self.context is not None else {}
        metric = str((config or {}).get("optimized_metric") or "val_accuracy")
        history: dict[str, list[float]] = {}
        for _, logs in self._history:
            for key, value in logs.items():
                history.setdefault(key, []).append(value)
        value = monitored_value(history, self._test_logs, metric, self.model)
        if value is not None and self.writer is not None:
            self.writer.submit(
                "t", {OPTIMIZED_METRIC_TAG: metric, OPTIMIZED_VALUE_TAG: f"{value:.6g}"}
            )

    def _tag_error(self, run: Any, status: JobStatus) -> None:
        """A FAILED run carries the job's error line (``RunContext.error``) as a tag."""
        error = self.context.error if self.context is not None else None
        if status is JobStatus.FAILED and error:
            try:
                run.client.set_tag(run.run_id, "trainkit.error", error[:5000])
            except Exception as exc:  # the status matters more than the tag
                log.warning("MLflow: tagging the error failed: %s: %s", type(exc).__name__, exc)

    def _save_model_locally(self) -> None:
        try:
            import mlflow.keras

            target = self.run_path(ARTIFACT_DIR, "model")
            if not target.exists():
                mlflow.keras.save_model(self.model, str(target), input_example=None)
            log.warning("MLflow: the model could not be logged; it is saved in %s", target)
        except Exception as exc:
            log.warning("MLflow: saving the model locally failed: %s", exc)


def _written(timeout: float) -> bool:
    return True
