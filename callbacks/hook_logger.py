"""HookLogger: one JSON line per hook call, for every one of Keras's 16 hooks.

What it does
    Streams an event per hook call to ``events.jsonl`` in the run directory, and to the
    ``trainkit.hooks`` Python logger at DEBUG. Each line holds ``hook``, ``phase`` (``setup``,
    ``train``, ``validation``, ``test``, ``predict``), ``epoch``, ``batch``, ``wall_time`` (Unix
    seconds), ``dt`` (seconds since the previous hook call) and ``logs``.

Cost and memory
    A hook call only appends a tuple (the hook, one ``perf_counter`` read, a reference to the
    logs) to a list: 1-2 microseconds on the training thread for a train batch hook (one step
    per call, every batch recorded: the usual case). A background thread turns
    blocks of them into JSON lines (``wall_time`` is the ``perf_counter`` read plus the block's
    offset to the Unix clock, taken when the block is handed over) and writes them: a block is
    handed over at a train (or test, or predict) batch's begin hook once it holds
    ``block_size`` events or ``flush_interval`` seconds have passed since the last one, so the
    writer works while the training thread is inside TensorFlow's step. Not at an epoch's end:
    there the training thread runs validation and every callback's epoch end in Python, and a
    writer beside it would hold the GIL it needs (measured: 2 to 14 ms more an epoch end). At
    the end of ``fit``, ``evaluate`` and ``predict`` the logger waits until everything is
    written and flushed, and the file is closed at the job's end. Memory holds at most one
    block (``block_size`` events) besides what the thread is writing, so a run of any length
    costs the same memory.

Size on disk: rotation
    When the next line would take ``events.jsonl`` past ``max_bytes`` (default 64 MiB) it is
    renamed ``events.jsonl.1`` (the older ones shift to ``.2`` ...; ``keep`` of them are kept,
    default 2) and a new ``events.jsonl`` starts, so the log of a run of any length takes at
    most ``(keep + 1) * max_bytes`` (192 MiB by default). ``max_bytes=null`` turns rotation
    off (the file then grows by about 0.27 kB a step with ``full``'s train logs).

Hooks
    All 16: ``set_model``, ``set_params``, ``on_{train,test,predict}_{begin,end}``,
    ``on_{train,test,predict}_batch_{begin,end}``, ``on_epoch_{begin,end}``.

True batch indices
    With ``steps_per_execution=k`` Keras calls the batch hooks once per k batches and reports
    the last index of the block without clipping it to the epoch (5 batches, k=4: 3 and 7).
    The logger reports the true last index (3 and 4) and the block's first index as
    ``first_batch``. For training the epoch length comes from ``params["steps"]``; for
    validation, test and predict from the job's ``context.steps`` when it is there.

Logs as the whole stack left them
    A line's ``logs`` are read by the writer thread, after every callback ran the hook: the
    ``on_train_batch_end`` line keeps a reference to the dict the stack hands every callback, and
    the ``on_epoch_end``, ``on_test_end`` and ``on_train_end`` lines are completed in
    ``after_stack`` (:func:`trainkit.stack.build_stack`). So their ``logs`` hold the keys that
    callbacks placed after the logger wrote (``best_epoch``, a user's own); the order of the
    lines is the order of the hooks. In a plain ``model.fit(callbacks=[...])`` the epoch-end
    lines are written in the hook itself.
    String values under keys that name secrets (:func:`trainkit.tracking.flatten.is_secret_key`)
    are written as ``***``, and URI credentials in strings are removed.

Options
    path: the file, relative to the run directory (default ``events.jsonl``).
    hooks: the hook names to record (default: all 16).
    every_n_batches: record a batch hook only for blocks that contain a batch index divisible
        by N (default 1: every batch). Non-batch hooks are always recorded.
    max_bytes: rotate the file when it passes this size; None: never.
    keep: how many rotated files (``events.jsonl.1`` ...) are kept.
    block_size: events handed to the writer thread at once, at most.
    flush_interval: seconds between hand-overs while batches run (the file is at most this
        far behind the training, as long as batches run).

Example
    >>> model.fit(x, y, epochs=2, callbacks=[HookLogger(every_n_batches=10)])
    ``python run.py callbacks=full callbacks.hook_logger.every_n_batches=10``
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import IO, Any

import numpy as np
import orjson

from callbacks.base import KERAS_HOOKS, TrainkitCallback
from trainkit.tracking.flatten import REDACTED, is_secret_key, redact_uri
from trainkit.tracking.writer import WorkerThread

logger = logging.getLogger("trainkit.hooks")

ALL_HOOKS = KERAS_HOOKS


def _logs_as_json(logs: dict[str, Any] | None) -> Any:
    """The logs as JSON values. A train batch's logs are finite Python floats (the stack hands
    them over as such): those are written as they are, without a walk through each value."""
    if not logs:
        return {}
    for value in logs.values():
        if type(value) is not float or value - value != 0.0:  # not a float, or inf / nan
            return _jsonable(logs)
    return logs


def _jsonable(value: Any) -> Any:
    if isinstance(value, str):
        return redact_uri(value)
    if isinstance(value, int | bool) or value is None:
        return value
    if isinstance(value, float | np.floating):
        value = float(value)
        return value if math.isfinite(value) else str(value)
    if isinstance(value, np.integer):
        return int(value)
    shape = getattr(value, "shape", None)
    if shape is not None:
        if len(shape) == 0:
            return _jsonable(np.asarray(value).item())
        # Predict batches carry the model outputs: record their shape, not the numbers.
        return {"shape": [int(d) if d is not None else None for d in shape]}
    if isinstance(value, dict):
        # Numbers are metrics (``user_key_count``); a string under a secret's name is not.
        return {
            str(k): REDACTED if isinstance(v, str) and is_secret_key(str(k)) else _jsonable(v)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return repr(value)


class HookLogger(TrainkitCallback):
    """Records every hook call as a JSON line; see the module docstring."""

    chief_only = True  # multi-worker: only the chief writes (trainkit.stack.Stack)

    def __init__(
        self,
        path: str = "events.jsonl",
        hooks: list[str] | tuple[str, ...] | None = None,
        every_n_batches: int = 1,
        max_bytes: int | None = 67_108_864,  # 64 MiB; a literal: config reads it without import
        keep: int = 2,
        block_size: int = 4096,
        flush_interval: float = 1.0,
    ) -> None:
        super().__init__()
        unknown = set(hooks or ()) - set(ALL_HOOKS)
        if unknown:
            raise ValueError(f"unknown hooks {sorted(unknown)}: choose from {ALL_HOOKS}")
        if every_n_batches < 1:
            raise ValueError(f"every_n_batches must be at least 1, got {every_n_batches}")
        self.relative_path = path
        self.hooks = frozenset(hooks or ALL_HOOKS)
        self.every_n_batches = int(every_n_batches)
        if max_bytes is not None and max_bytes < 1:
            raise ValueError(f"max_bytes must be positive or null, got {max_bytes}")
        if keep < 0:
            raise ValueError(f"keep must be at least 0, got {keep}")
        self.max_bytes = int(max_bytes) if max_bytes is not None else None
        self.keep = int(keep)
        self.block_size = max(int(block_size), 1)
        if flush_interval < 0:
            raise ValueError(f"flush_interval must be at least 0, got {flush_interval}")
        self.flush_interval = float(flush_interval)
        self._next_hand_over = 0.0  # perf_counter time; the first batch hands the setup over
        self._file: IO[bytes] | None = None
        self._target: Path | None = None
        self._size = 0
        self._buffer: list[tuple[Any, ...]] = []
        self._writer: WorkerThread | None = None
        self._last = time.perf_counter()
        self._epoch: int | None = None
        self._in_fit = False
        self._test_phase = "test"
        self._begin_batch = 0
        self._pending: tuple[str, str, int | None, float, float, Any] | None = None
        # fit with one step per hook call and every train batch recorded: the short path
        self._fast_train = False

    @property
    def path(self) -> Path:
        return self.run_dir / self.relative_path

    # -- writing --------------------------------------------------------------------------
    # The stack need not call after_stack after each train batch: the batch line holds a
    # reference to the logs dict, which the writer thread reads once the step is over.
    after_stack_batches = False

    def _emit_after_stack(self, hook: str, phase: str, logs=None) -> None:
        """In a stack, hold the event until after_stack hands the final logs; else write it."""
        if not self.in_stack:
            self._emit(hook, phase, None, logs)
            return
        self._write_pending()  # the previous one's after_stack never came: write it as it was
        now = time.perf_counter()  # the hook's own time, not after_stack's
        dt, self._last = now - self._last, now
        self._pending = (hook, phase, self._epoch, now, dt, logs)

    def after_stack(self, hook: str, index: int | None, logs: dict[str, Any]) -> None:
        """Write the held event with the logs as the whole stack left them."""
        pending, self._pending = self._pending, None
        if pending is None or pending[0] != hook:
            if pending is not None:
                self._pending = pending
                self._write_pending()
            return
        self._record(*pending[:5], logs)
        if hook == "on_train_end" or (hook == "on_test_end" and not self._in_fit):
            self._flush(wait=True)  # the file is complete when fit or evaluate returns

    def _write_pending(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            self._record(*pending)

    def _record(self, hook: str, phase: str, epoch, now: float, dt: float, logs) -> None:
        if hook in self.hooks:
            self._buffer.append((hook, phase, epoch, None, now, dt, None, logs))

    def _emit(
        self,
        hook: str,
        phase: str,
        batch: int | None = None,
        logs=None,
        first_batch: int | None = None,
        hand_over: bool = False,
        by_time: bool = True,
    ) -> None:
        # One clock read and an append; the writer thread makes the JSON line. A block is
        # handed over only at a batch's begin (hand_over): not at a batch end, where callbacks
        # after this one may still add keys to its logs, nor at an epoch's end; during
        # validation (by_time False) only a full block, which bounds the memory.
        now = time.perf_counter()
        dt, self._last = now - self._last, now
        if hook not in self.hooks:
            return
        buffer = self._buffer
        buffer.append((hook, phase, self._epoch, batch, now, dt, first_batch, logs))
        if hand_over and (
            len(buffer) >= self.block_size or (by_time and now >= self._next_hand_over)
        ):
            self._hand_over()

    def _hand_over(self) -> None:
        """Give the buffered events to the writer thread (no waiting), with the offset from
        ``perf_counter`` to the Unix clock that makes their ``wall_time``."""
        if not self._buffer:
            return
        block, self._buffer = self._buffer, []
        self._next_hand_over = time.perf_counter() + self.flush_interval
        if self._writer is None:
            self._writer = WorkerThread("trainkit-hook-logger")
        self._writer.submit(self._write_block, block, time.time() - time.perf_counter())

    def _flush(self, wait: bool = False) -> None:
        """Hand the buffer over; with ``wait``, until it is written and flushed to the file."""
        self._hand_over()
        if wait and self._writer is not None:
            self._writer.drain()

    # -- the writer thread ------------------------------------------------------------------
    def _write_block(self, block: list[tuple[Any, ...]], offset: float) -> None:
        # orjson: a train batch's line in about a tenth of json.dumps's time (2 us a step
        # instead of 13 here), which this thread would spend holding the GIL beside training.
        debug = logger.isEnabledFor(logging.DEBUG)
        dumps = orjson.dumps
        lines = []
        for hook, phase, epoch, batch, now, dt, first_batch, logs in block:
            event = {
                "hook": hook,
                "phase": phase,
                "epoch": epoch,
                "batch": batch,
                "wall_time": now + offset,
                "dt": dt,
            }
            if first_batch is not None:
                event["first_batch"] = first_batch
            event["logs"] = _logs_as_json(logs)
            try:
                line = dumps(event)
            except TypeError:  # what orjson does not write (an int beyond 64 bits, a key not str)
                event["logs"] = _jsonable(logs) if logs else {}
                line = json.dumps(event).encode()
            lines.append(line)
            if debug:
                logger.debug(line.decode())
        self._write_lines(lines)

    def _write_lines(self, lines: list[bytes]) -> None:
        if self._file is None:
            self._open()
        assert self._file is not None
        limit = self.max_bytes
        start = 0
        if limit is not None:
            # Rotate between lines: a line never spans two files, and a file passes the limit
            # only with a single line longer than it.
            for i, line in enumerate(lines):
                size = len(line) + 1
                if self._size + size > limit and self._size > 0:
                    if i > start:
                        self._file.write(b"\n".join(lines[start:i]) + b"\n")
                    self._rotate()
                    start = i
                self._size += size
        if start < len(lines):
            self._file.write(b"\n".join(lines[start:]) + b"\n")
        self._file.flush()

    def _open(self) -> None:
        self._target = self.run_path(self.relative_path)
        self._file = open(self._target, "ab")  # noqa: SIM115 - kept open
        self._size = self._file.tell()

    def _rotate(self) -> None:
        """events.jsonl -> events.jsonl.1 -> .2 ...; the oldest beyond ``keep`` is removed."""
        assert self._file is not None and self._target is not None
        self._file.close()
        target = self._target
        rotated = [target.with_name(f"{target.name}.{n}") for n in range(1, self.keep + 1)]
        if not rotated:
            target.unlink(missing_ok=True)
        else:
            rotated[-1].unlink(missing_ok=True)
            newer_ones = [target, *rotated[:-1]]
            for older, newer in zip(reversed(rotated), reversed(newer_ones), strict=True):
                if newer.exists():
                    newer.replace(older)
        self._file = open(target, "ab")  # noqa: SIM115 - kept open
        self._size = 0

    def close(self) -> None:
        """Write what is buffered, stop the writer thread and close the file."""
        if getattr(self, "_buffer", None):
            self._hand_over()
        writer = getattr(self, "_writer", None)
        if writer is not None:
            self._writer = None
            writer.close()
        if getattr(self, "_file", None) is not None:
            self._file.close()
            self._file = None

    def on_job_end(self, status: str) -> None:
        self._write_pending()
        self.close()

    def __del__(self) -> None:
        self.close()

    # -- batch index bookkeeping ----------------------------------------------------------
    def _steps(self, phase: str) -> int | None:
        if phase == "train":
            return (self.params or {}).get("steps")
        if self.context is None:
            return None
        return self.context.steps.of_phase(phase)

    def _wanted(self, first: int, last: int) -> bool:
        n = self.every_n_batches
        return n == 1 or (last // n) * n >= first

    def _batch_begin(self, hook: str, phase: str, batch: int, logs) -> None:
        self._begin_batch = batch
        last = batch + self._execution_size() - 1
        steps = self._steps(phase)
        if steps:
            last = min(last, steps - 1)
        if self._wanted(batch, last):
            # validation is part of an epoch's end: its lines wait for the next train batch
            self._emit(hook, phase, batch, logs, hand_over=True, by_time=phase != "validation")
        else:
            self._last = time.perf_counter()

    def _batch_end(self, hook: str, phase: str, batch: int, logs) -> None:
        steps = self._steps(phase)
        last = min(batch, steps - 1) if steps else batch
        first = self._begin_batch
        if self._wanted(first, last):
            self._emit(hook, phase, last, logs, first_batch=first, hand_over=False)
        else:
            self._last = time.perf_counter()

    def _execution_size(self) -> int:
        model = self.model
        return int(getattr(model, "steps_per_execution", 1) or 1) if model is not None else 1

    # -- the 16 hooks ---------------------------------------------------------------------
    def set_model(self, model) -> None:
        super().set_model(model)
        self._emit("set_model", "setup", logs={"model": getattr(model, "name", None)})

    def set_params(self, params) -> None:
        super().set_params(params)
        self._emit("set_params", "setup", logs=dict(params or {}))

    def on_train_begin(self, logs=None) -> None:
        self._in_fit = True
        self._epoch = None
        self._fast_train = self.every_n_batches == 1 and self._execution_size() == 1
        self._emit("on_train_begin", "train", logs=logs)

    def on_train_end(self, logs=None) -> None:
        self._emit_after_stack("on_train_end", "train", logs=logs)
        self._in_fit = self._fast_train = False
        self._epoch = None
        self._flush(wait=True)

    def on_epoch_begin(self, epoch, logs=None) -> None:
        self._epoch = int(epoch)
        self._emit("on_epoch_begin", "train", logs=logs)

    def on_epoch_end(self, epoch, logs=None) -> None:
        self._epoch = int(epoch)
        self._emit_after_stack("on_epoch_end", "train", logs)

    def on_train_batch_begin(self, batch, logs=None) -> None:
        if self._fast_train:  # one step per call, every batch: no batch bookkeeping
            self._emit("on_train_batch_begin", "train", batch, logs, hand_over=True)
            return
        self._batch_begin("on_train_batch_begin", "train", batch, logs)

    def on_train_batch_end(self, batch, logs=None) -> None:
        if self._fast_train:
            self._emit("on_train_batch_end", "train", batch, logs, batch, hand_over=False)
            return
        self._batch_end("on_train_batch_end", "train", batch, logs)

    def on_test_begin(self, logs=None) -> None:
        self._test_phase = "validation" if self._in_fit else "test"
        self._emit("on_test_begin", self._test_phase, logs=logs)

    def on_test_end(self, logs=None) -> None:
        self._emit_after_stack("on_test_end", self._test_phase, logs)
        if not self._in_fit:  # inside fit: the next train batch hands validation's lines over
            self._flush(wait=True)

    def on_test_batch_begin(self, batch, logs=None) -> None:
        self._batch_begin("on_test_batch_begin", self._test_phase, batch, logs)

    def on_test_batch_end(self, batch, logs=None) -> None:
        self._batch_end("on_test_batch_end", self._test_phase, batch, logs)

    def on_predict_begin(self, logs=None) -> None:
        self._emit("on_predict_begin", "predict", logs=logs)

    def on_predict_end(self, logs=None) -> None:
        self._emit("on_predict_end", "predict", logs=logs)
        self._flush(wait=True)

    def on_predict_batch_begin(self, batch, logs=None) -> None:
        self._batch_begin("on_predict_batch_begin", "predict", batch, logs)

    def on_predict_batch_end(self, batch, logs=None) -> None:
        self._batch_end("on_predict_batch_end", "predict", batch, logs)
