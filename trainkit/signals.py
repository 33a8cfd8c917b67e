"""Graceful stops: Ctrl-C (SIGINT) and SIGTERM (pre-emption, SLURM's time limit, Kubernetes).

While a job runs, :func:`installed` replaces the handlers of both signals. The first signal only
records itself and sets ``model.stop_training``: the step that is running finishes, the callbacks
see its batch hooks (``callbacks.backup.Backup`` writes a backup there, reading
:func:`requested`), then :class:`GracefulStop`, the stack's last callback, raises
:class:`Interrupted`. The job ends its callbacks ``KILLED`` (TensorBoard flushed, the MLflow run
ended KILLED) and exits with ``128 + signal`` (130 for Ctrl-C, 143 for SIGTERM). A second signal
stops at once (``KeyboardInterrupt``).
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from typing import Any

import keras

_state: dict[str, Any] = {"signum": None, "model": None, "forced": False}


class Interrupted(KeyboardInterrupt):
    """Raised after the current step when the job received SIGINT or SIGTERM."""

    def __init__(self, signum: int) -> None:
        self.signum = int(signum)
        self.name = signal.Signals(self.signum).name
        super().__init__(self.name)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def requested() -> int | None:
    """The signal number received (a stop is pending), or None."""
    return _state["signum"]


def forced() -> bool:
    """Whether a second signal stopped the job at once, wherever it was (in the middle of a
    step's hooks, say): what the model holds then is no position to resume from."""
    return bool(_state["forced"])


def _handle(signum: int, frame: Any) -> None:
    if _state["signum"] is not None:
        _state["forced"] = True
        raise KeyboardInterrupt  # the second signal: stop now
    _state["signum"] = signum
    model = _state["model"]
    if model is not None:
        model.stop_training = True


@contextlib.contextmanager
def installed(model: Any = None) -> Iterator[None]:
    """SIGINT and SIGTERM handled as graceful stops for the duration of the block."""
    _state.update(signum=None, model=model, forced=False)
    previous = {}
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, _handle)
    except ValueError:  # not the main thread: leave the handlers alone
        previous = {}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _state.update(model=None)


def reset() -> None:
    _state.update(signum=None, forced=False)


class GracefulStop(keras.callbacks.Callback):
    """Raises :class:`Interrupted` at the first batch end after a signal, once every callback
    before it has seen that batch. The job puts it last in its stack.

    A signal during validation or at an epoch's end stops there too (``on_test_begin``,
    ``on_test_batch_end``, ``on_train_end``): ``callbacks.backup.Backup`` saves the state where
    the job stopped when the job ends ``KILLED``.

    Hooks: ``on_train_batch_end``, ``on_test_begin``, ``on_test_batch_end``,
    ``on_predict_batch_end``, ``on_epoch_begin``, ``on_train_end``.
    """

    def _check(self, *args: Any, **kwargs: Any) -> None:
        signum = _state["signum"]
        if signum is not None:
            raise Interrupted(signum)

    on_train_batch_end = _check
    on_test_begin = _check
    on_test_batch_end = _check
    on_predict_batch_end = _check
    on_epoch_begin = _check
    on_train_end = _check  # a signal at the last epoch's end: no evaluation after it
