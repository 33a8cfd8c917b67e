"""From the ``callbacks`` config group to a list of live callbacks.

Each entry of ``cfg.callbacks`` is a ``_target_`` dict that Hydra instantiates; entries set to
null are skipped, so ``callbacks.tensorboard=null`` and ``~callbacks.tensorboard`` both remove
one. The dict order is the call order. Each callback that has ``set_context`` gets the job's
:class:`~trainkit.context.RunContext`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import keras
from hydra.errors import InstantiationException
from hydra.utils import instantiate

from trainkit.context import RunContext
from trainkit.errors import ConfigError

STATUS_FINISHED, STATUS_FAILED, STATUS_KILLED = "FINISHED", "FAILED", "KILLED"


def instantiate_callbacks(
    entries: Mapping[str, Any] | None, context: RunContext
) -> list[keras.callbacks.Callback]:
    callbacks: list[keras.callbacks.Callback] = []
    for name, entry in (entries or {}).items():
        if entry is None:
            continue
        if not isinstance(entry, Mapping) or "_target_" not in entry:
            raise ConfigError(
                f"callbacks.{name} must be a dict with a _target_ "
                f"(e.g. +callbacks.{name}._target_=mypkg.MyCallback), got {entry!r}"
            )
        try:
            callback = instantiate(entry, _convert_="all")
        except InstantiationException as exc:
            reason = str(exc).strip().splitlines()[-1]
            raise ConfigError(f"callbacks.{name} ({entry['_target_']}) failed: {reason}") from None
        if not isinstance(callback, keras.callbacks.Callback):
            raise ConfigError(
                f"callbacks.{name}: {entry['_target_']} is not a keras.callbacks.Callback"
            )
        callback.trainkit_name = name
        if hasattr(callback, "set_context"):
            callback.set_context(context)
        callbacks.append(callback)
    return callbacks


def end_job(callbacks: Iterable[keras.callbacks.Callback], status: str) -> list[str]:
    """Call ``on_job_end(status)`` on each callback that has it; never raises.

    Returns the messages of the callbacks that failed to close, so the job can report them
    without losing the original error.
    """
    problems = []
    for callback in callbacks:
        close = getattr(callback, "on_job_end", None)
        if close is None:
            continue
        try:
            close(status)
        except Exception as exc:  # noqa: BLE001 - one bad closer must not hide the others
            name = getattr(callback, "trainkit_name", type(callback).__name__)
            problems.append(f"{name}: {exc.__class__.__name__}: {exc}")
    return problems
