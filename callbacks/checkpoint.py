"""Best (top-k), last and every-N-steps ``.keras`` checkpoints under ``<run_dir>/checkpoints``."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from callbacks.base import TrainkitCallback, metric_direction, read_variables
from trainkit.context import JobStatus
from trainkit.keras_saving import prime_attr_skipsets
from trainkit.tracking.writer import WorkerThread

log = logging.getLogger(__name__)

MODES = ("auto", "min", "max")


class Checkpoint(TrainkitCallback):
    """Saves the model (architecture and weights; the optimizer state only if asked) as
    ``.keras`` files.

    Files in ``<run_dir>/<dirname>/``:

    * ``epoch=<E>-<monitor>=<value>.keras``: the ``save_top_k`` best epochs by ``monitor``
      (``-1`` keeps all, ``0`` none); a file that falls out of the top k is deleted.
    * ``last.keras``: the latest epoch (``save_last``).
    * ``step=<S>.keras``: every ``every_n_steps`` optimizer steps (global step ``S``,
      counted from the first epoch), the ``keep_step_checkpoints`` most recent kept (None:
      all).

    Epoch checkpoints are written every ``every_n_epochs`` epochs. ``E`` is 1-based, as in
    Keras's messages. Each file is written under a temporary name and renamed, so an interrupt
    never leaves a truncated checkpoint; nothing is deleted when a run fails.

    What a file holds: by default the architecture and every model variable, not the
    optimizer's slots (``save_optimizer=False``): they are what a checkpoint is used for
    (``model.weights=PATH``, ``task=predict checkpoint=PATH``, ``keras.saving.load_model``) and
    Adam's two slots per weight would triple the file (AlexNet: 250 MB of weights, 750 MB with
    Adam's state). Continuing a training exactly needs the optimizer state: that is the
    backup's job (:class:`callbacks.backup.Backup`), which keeps it while the job runs.
    ``save_optimizer=True`` writes it into every checkpoint too.

    Where the best model is: the attributes ``best_model_path`` (str, or None before the first
    monitored epoch), ``best_model_score``, ``best_k_models`` (path -> score),
    ``last_model_path``. Nothing non-numeric goes into the logs. Another callback (the
    tracking one) finds it with ``context.find(BestCheckpoint)`` and reads ``best_model_path``
    at ``on_train_end`` or ``on_job_end``.

    ``mode="auto"``: the metric's own direction, then its name, as every trainkit callback
    decides it (:func:`callbacks.base.metric_direction`: ``val_mae`` is ``min``,
    ``val_accuracy`` ``max``); a name it cannot tell raises and asks for ``mode``. Non-finite
    values never count as best. Put it after ``EarlyStopping`` and the loggers.

    Cost: a batch hook asks the stack's clock whether a step checkpoint is due. A save
    (``background=True``, the default) takes a snapshot of the model's variables on the
    training thread (a read of each: the runtime copies a buffer only when the next step
    writes it) and hands it to a writer thread, which loads it into a *shadow* model (the same
    architecture, built once from the model's config) and writes the ``.keras`` file from
    there, while training goes on: the file holds the weights of the step that was due, not of
    a later one. Files appear in save order; the bookkeeping (``best_model_path`` and the top
    k) is up to date at once, and reading ``best_model_path`` waits for the files written so
    far, as do ``on_train_end`` and ``on_job_end``. The shadow costs one copy of the weights in
    memory. ``save_optimizer=True``, or a model that cannot be rebuilt from its config, saves
    on the training thread, as ``background=False`` does.

    Hooks: ``on_train_begin``, ``on_train_batch_end`` (work only with ``every_n_steps``),
    ``on_epoch_end``, ``on_train_end`` (waits for the writer).

    Args:
        monitor: the epoch-log key ranking the best checkpoints.
        mode: ``auto``, ``min`` or ``max``.
        save_top_k: how many best checkpoints to keep.
        save_last: keep ``last.keras``.
        every_n_epochs: the epoch-checkpoint period.
        every_n_steps: the step-checkpoint period; None for none.
        keep_step_checkpoints: how many step checkpoints to keep; None for all.
        dirname: the folder under the run directory.
        save_optimizer: also save the optimizer's state (slots, iteration count) in each file.
        verbose: 1 prints a line when a new best is saved.
        background: write the files on a writer thread from a snapshot (see Cost).

    Example::

        Checkpoint(monitor="val_accuracy", save_top_k=3, every_n_steps=1000)
        # conf/callbacks/<stack>.yaml:
        #   checkpoint: {_target_: callbacks.checkpoint.Checkpoint, monitor: val_loss,
        #                save_top_k: 1, save_last: true}
    """

    chief_only = True  # multi-worker: only the chief writes (trainkit.stack.Stack)

    uses_clock = True  # step checkpoints are due by the stack's clock

    def __init__(
        self,
        monitor: str = "val_loss",
        mode: str = "auto",
        save_top_k: int = 1,
        save_last: bool = True,
        every_n_epochs: int = 1,
        every_n_steps: int | None = None,
        keep_step_checkpoints: int | None = None,
        dirname: str = "checkpoints",
        save_optimizer: bool = False,
        verbose: int = 0,
        background: bool = True,
    ) -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        self.monitor = monitor
        self.mode = mode
        self.save_top_k = int(save_top_k)
        self.save_last = save_last
        self.every_n_epochs = max(int(every_n_epochs), 1)
        self.every_n_steps = int(every_n_steps) if every_n_steps else None
        self.keep_step_checkpoints = keep_step_checkpoints
        self.dirname = dirname
        self.save_optimizer = bool(save_optimizer)
        self.verbose = verbose
        self.background = bool(background)
        self._direction: str | None = None
        self._writer: WorkerThread | None = None
        self._shadow: Any = None  # None: not built yet; False: cannot be built
        self._reset()

    def _reset(self) -> None:
        self.best_k_models: dict[str, float] = {}
        self._best_model_path: str | None = None
        self.best_model_score: float | None = None
        self.last_model_path: str | None = None
        self.step_model_paths: list[str] = []
        self._warned_missing = False

    @property
    def best_model_path(self) -> str | None:
        """The best checkpoint's path; reading it waits for the files being written."""
        self.wait()
        return self._best_model_path

    @best_model_path.setter
    def best_model_path(self, path: str | None) -> None:
        self._best_model_path = path

    def wait(self) -> None:
        """Return when every checkpoint saved so far is on disk."""
        if self._writer is not None:
            self._writer.drain()

    @property
    def directory(self) -> Path:
        return self.run_dir / self.dirname

    def _higher_is_better(self) -> bool:
        if self._direction is None:  # the metric's own direction, then its name
            self._direction = metric_direction(self.monitor, self.model, self.mode)
        return self._direction == "max"

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self.wait()
        self._reset()
        self._direction = None
        self.directory.mkdir(parents=True, exist_ok=True)

    def needs_batch_hook(self, hook: str) -> bool:
        return hook != "on_train_batch_end" or bool(self.every_n_steps)

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        if not self.clock.due(self.every_n_steps):
            return
        path = self._save(f"step={self.clock.step:08d}.keras")
        self.step_model_paths.append(str(path))
        keep = self.keep_step_checkpoints
        while keep is not None and len(self.step_model_paths) > max(int(keep), 0):
            self._in_order(_remove, self.step_model_paths.pop(0))

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if (epoch + 1) % self.every_n_epochs:
            return
        logs = logs or {}
        saved: Path | None = None
        current = logs.get(self.monitor)
        if current is None:
            if self.save_top_k and not self._warned_missing:
                warnings.warn(
                    f"Checkpoint: '{self.monitor}' is not in the epoch logs "
                    f"({', '.join(logs)}); no best checkpoints are kept",
                    stacklevel=2,
                )
                self._warned_missing = True
        elif self.save_top_k and math.isfinite(current) and self._enters_top_k(float(current)):
            name = f"epoch={epoch + 1:03d}-{self.monitor}={float(current):.4f}.keras"
            saved = self._save(name)
            self.best_k_models[str(saved)] = float(current)
            self._drop_worst()
            self._update_best(epoch)
        if self.save_last:
            target = self.directory / "last.keras"
            if saved is not None:
                self._in_order(_copy_atomically, saved, target)
            else:
                self._save(target.name)
            self.last_model_path = str(target)

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        self.wait()

    def on_job_end(self, status: JobStatus) -> None:
        super().on_job_end(status)
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self._shadow = None

    def _enters_top_k(self, value: float) -> bool:
        if self.save_top_k < 0 or len(self.best_k_models) < self.save_top_k:
            return True
        return self._better(value, self._worst()[1])

    def _better(self, a: float, b: float) -> bool:
        return a > b if self._higher_is_better() else a < b

    def _worst(self) -> tuple[str, float]:
        pick = min if self._higher_is_better() else max
        return pick(self.best_k_models.items(), key=lambda item: item[1])

    def _drop_worst(self) -> None:
        while 0 <= self.save_top_k < len(self.best_k_models):
            path, _ = self._worst()
            del self.best_k_models[path]
            self._in_order(_remove, path)

    def _update_best(self, epoch: int) -> None:
        pick = max if self._higher_is_better() else min
        path, score = pick(self.best_k_models.items(), key=lambda item: item[1])
        if path != self._best_model_path and self.verbose:
            print(f"Checkpoint: epoch {epoch + 1}: best {self.monitor} {score:.6g} -> {path}")
        self._best_model_path, self.best_model_score = path, score

    def _save(self, name: str) -> Path:
        target = self.directory / name
        shadow = self._shadow_model()
        if shadow is None:
            self.wait()  # files keep their save order
            _write(self.model, target, self.save_optimizer)
        else:
            snapshot = read_variables(self.model.variables)
            self._in_order(_write_snapshot, shadow, snapshot, target)
        return target

    def _in_order(self, fn: Any, *args: Any) -> None:
        """Run ``fn(*args)`` after the saves before it: on the writer thread if there is one."""
        if self._writer is None:
            fn(*args)
        else:
            self._writer.submit(fn, *args)

    def _shadow_model(self) -> Any:
        """The model the writer thread saves from; None where saving stays on this thread."""
        if not self.background or self.save_optimizer:
            return None
        if self._shadow is None:
            self._shadow = _build_shadow(self.model) or False
            if self._shadow is not False:
                self._writer = WorkerThread("trainkit-checkpoint")
        return self._shadow or None

    # -- resume support (callbacks.backup.Backup) ---------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        # The files need not be written yet: a job killed before they are resumes with the
        # paths that exist (load_state_dict), and writes the next ones anew.
        return {
            "best_k_models": dict(self.best_k_models),
            "best_model_path": self._best_model_path,
            "best_model_score": self.best_model_score,
            "last_model_path": self.last_model_path,
            "step_model_paths": list(self.step_model_paths),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best_k_models = {
            path: float(score)
            for path, score in state.get("best_k_models", {}).items()
            if Path(path).exists()
        }
        path = state.get("best_model_path")
        self._best_model_path = path if path in self.best_k_models else None
        self.best_model_score = state.get("best_model_score")
        self.last_model_path = state.get("last_model_path")
        self.step_model_paths = [p for p in state.get("step_model_paths", []) if Path(p).exists()]


def _write(model: Any, target: Path, with_optimizer: bool) -> None:
    """``model`` to ``target`` as a ``.keras`` file, under a temporary name then renamed."""
    temporary = target.with_name(f".tmp-{target.name}")
    prime_attr_skipsets()  # half a small model's save (trainkit.keras_saving)
    if with_optimizer:
        model.save(temporary)
    else:
        save_without_optimizer(model, temporary)
    os.replace(temporary, target)


def _write_snapshot(shadow: Any, snapshot: list[Any], target: Path) -> None:
    """On the writer thread: the shadow takes the snapshot's values, then is written."""
    for variable, value in zip(shadow.variables, snapshot, strict=True):
        variable.assign(value)
    _write(shadow, target, with_optimizer=False)


def _build_shadow(model: Any) -> Any:
    """A model of the same class and config as ``model``, built and compiled alike, whose
    variables match ``model.variables`` one to one; None if it cannot be made.

    Built on a thread of its own (and waited for): Keras runs callbacks inside the distribution
    strategy's scope, which is per thread, and the shadow must hold plain variables (under a
    multi-worker strategy, only the chief saves: variables made in its scope would wait for
    the other workers forever).
    """
    with ThreadPoolExecutor(1, thread_name_prefix="trainkit-checkpoint-build") as pool:
        return pool.submit(_shadow_of, model).result()


def _shadow_of(model: Any) -> Any:
    import keras

    try:
        with keras.name_scope("trainkit_checkpoint_shadow"):
            shadow = model.__class__.from_config(model.get_config())
        if not shadow.built:
            shadow.build(model.input_shape)
        compile_config = model.get_compile_config() if model.compiled else None
        if compile_config:
            shadow.compile_from_config(compile_config)
        pairs = list(zip(shadow.variables, model.variables, strict=True))
    except Exception as exc:  # noqa: BLE001 - any model: fall back to saving on this thread
        log.info("Checkpoint: saving on the training thread (%s: %s)", type(exc).__name__, exc)
        return None
    if any(tuple(a.shape) != tuple(b.shape) or a.dtype != b.dtype for a, b in pairs):
        log.info("Checkpoint: saving on the training thread (the rebuilt model differs)")
        return None
    return shadow


def save_without_optimizer(model: Any, path: str | os.PathLike) -> None:
    """``model.save(path)`` (a ``.keras`` file: config, compile config, weights) without the
    optimizer's variables.

    Keras 3's ``.keras`` format has no ``include_optimizer`` switch: it saves every
    ``KerasSaveable`` it reaches from the model, the optimizer included. For the length of the
    save, the optimizer (and a loss-scale optimizer's inner one) saves nothing: the file then
    holds its compile config but no slots, and ``keras.saving.load_model`` builds a fresh
    optimizer (``compile=True``) or none (``compile=False``).
    """
    optimizers = []
    optimizer = getattr(model, "optimizer", None)
    while optimizer is not None and optimizer not in optimizers:
        optimizers.append(optimizer)
        optimizer = getattr(optimizer, "inner_optimizer", None)
    for optimizer in optimizers:
        optimizer.save_own_variables = _save_nothing  # an instance attribute: shadows the method
    try:
        model.save(path)
    finally:
        for optimizer in optimizers:
            with contextlib.suppress(AttributeError):
                del optimizer.save_own_variables


def _save_nothing(store: Any) -> None:
    """An optimizer's ``save_own_variables`` while a weights-only checkpoint is written."""


def _copy_atomically(source: Path, target: Path) -> None:
    """``target`` becomes a copy of ``source``: a hard link where the file system allows.

    Checkpoint files are never written in place (always a new file renamed over the old), so
    two names for one file stay independent; a link saves rewriting a file that holds the
    whole model (250 MB of weights for AlexNet, 750 MB with Adam's state).
    """
    temporary = target.with_name(f".tmp-{target.name}")
    _remove(str(temporary))
    try:
        os.link(source, temporary)
    except OSError:
        shutil.copyfile(source, temporary)
    os.replace(temporary, target)


def _remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.remove(path)
