"""What trainkit adds to ``keras.callbacks.Callback``: the run context and the job's end.

The job calls two methods that Keras does not have, on every callback that defines them:

``set_context(ctx)``
    right after Hydra instantiates the callback, before ``fit``: ``ctx`` is the job's
    :class:`trainkit.context.RunContext` (run directory, resolved config, class names ...).

``on_job_end(status)``
    once, after ``fit``, ``evaluate`` and ``predict`` (or after the exception that cut them
    short), with ``status`` one of ``"FINISHED"``, ``"FAILED"``, ``"KILLED"``. Writers flush and
    close here; the MLflow callback ends its run with that status. It must not raise.

A callback used outside the job (plain ``model.fit(callbacks=[...])``) gets no context: it
then writes under ``./trainkit_run`` and closes its writers at ``on_train_end``.
"""

from __future__ import annotations

from pathlib import Path

import keras

from trainkit.context import RunContext

DEFAULT_RUN_DIR = Path("trainkit_run")

# The 16 methods Keras calls on a callback, in the order of keras.callbacks.Callback.
KERAS_HOOKS = (
    "set_model",
    "set_params",
    "on_train_begin",
    "on_train_end",
    "on_epoch_begin",
    "on_epoch_end",
    "on_train_batch_begin",
    "on_train_batch_end",
    "on_test_begin",
    "on_test_end",
    "on_test_batch_begin",
    "on_test_batch_end",
    "on_predict_begin",
    "on_predict_end",
    "on_predict_batch_begin",
    "on_predict_batch_end",
)

JOB_STATUSES = ("FINISHED", "FAILED", "KILLED")


class TrainkitCallback(keras.callbacks.Callback):
    """Base class for library callbacks that write files or need the run's facts."""

    def __init__(self) -> None:
        super().__init__()
        self.context: RunContext | None = None

    def set_context(self, context: RunContext) -> None:
        self.context = context

    @property
    def run_dir(self) -> Path:
        return self.context.run_dir if self.context is not None else DEFAULT_RUN_DIR

    def run_path(self, *parts: str) -> Path:
        """A path under the run directory, its parent folder created."""
        target = self.run_dir.joinpath(*parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    def on_job_end(self, status: str) -> None:
        """Called once by the job when everything has run; override to flush and close."""
