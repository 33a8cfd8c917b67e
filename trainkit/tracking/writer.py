"""The background thread between the training loop and the MLflow store.

The training loop appends ``(key, value, step, ms)`` points to a deque (atomic under the GIL,
no lock), or hands over blocks of per-step rows (:meth:`BackgroundWriter.add_rows`) that the
thread turns into points with ``convert`` before writing them: the MLflow logger's batch hook
then only appends a tuple to a list of its own. Every ``interval`` seconds the thread sets
``wants_rows`` (the logger hands its rows over at its next step) and drains the deque into
``log_batch`` calls of at most 1000 metrics. When the store fails, it warns once,
appends what it holds to the spool and from then on probes the store; when the store answers
again it replays the spool, in order, before anything newer.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from trainkit.tracking.flatten import METRICS_PER_BATCH, PARAMS_PER_BATCH, chunks, redact_uri
from trainkit.tracking.spool import Point, Spool
from trainkit.tracking.store import TrackedRun, is_client_error, unreachable_message

log = logging.getLogger("trainkit.tracking")

Op = tuple[str, Any, Any]


class BackgroundWriter:
    def __init__(
        self,
        run: TrackedRun,
        spool: Spool,
        interval: float = 2.0,
        probe_interval: float = 5.0,
        on_open: Callable[[], None] | None = None,
    ) -> None:
        self.run = run
        self.spool = spool
        self.interval = interval
        self.probe_interval = probe_interval
        self.on_open = on_open
        self.points: deque[Point] = deque()
        # A logs key -> the MLflow key it is filed under (system/step_time ...), applied as the
        # points leave the buffer, so the training thread appends the logs' own keys.
        self.rename: dict[str, str] = {}
        self.ops: deque[Op] = deque()
        # Blocks of per-step rows, made into points on this thread by ``convert`` (which
        # appends them to ``points``); ``wants_rows`` asks the owner for its next block.
        self.rows: deque[list[Any]] = deque()
        self.convert: Callable[[list[Any]], None] | None = None
        self.wants_rows = False
        self._open_waits_for_rows = False
        self._convert_lock = threading.Lock()
        self.down = False
        self.written = 0
        self.spooled = 0
        self.replayed = 0
        self.warned = False
        self._dropped_warned = False
        self._next_probe = 0.0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._cycle_lock = threading.Lock()
        self._thread: threading.Thread | None = None

    # -- called from the training thread -----------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="trainkit-mlflow", daemon=True)
            self._thread.start()

    def open_after_first_rows(self) -> None:
        """Open the run once the first block of rows arrives (the first steps are over).

        Importing MLflow and opening the store take seconds of Python, which would hold the
        GIL against the trace of the first step; after it, the steps run in TensorFlow's C++
        with the GIL released. Until then points and ops wait in memory. A flush or the end
        opens it at once.
        """
        self._open_waits_for_rows = True
        self.wants_rows = True

    def add_rows(self, rows: list[Any]) -> None:
        """Hand over a block of rows (the owner's, final); the thread writes them soon."""
        self.rows.append(rows)
        self.wants_rows = False
        self._wake.set()

    def convert_rows(self) -> None:
        """Turn the rows handed over so far into points now (any thread)."""
        with self._convert_lock:
            while self.rows:
                block = self.rows.popleft()
                if self.convert is not None:
                    self.convert(block)

    def submit(self, kind: str, payload: Any, extra: Any = None) -> None:
        """Queue params (``"p"``), tags (``"t"``), an artifact (``"a"``, path, dir) or the start
        of the store's helper process (``"h"``, :mod:`trainkit.tracking.store_process`)."""
        self.ops.append((kind, payload, extra))
        if kind == "h":
            self._wake.set()  # now, not at the next interval: the helper takes seconds to start

    def flush(self, timeout: float = 30.0) -> bool:
        """Write what is queued now; True when nothing is left in memory."""
        self._open_waits_for_rows = False
        self._idle.clear()
        self._wake.set()
        if self._thread is None or not self._thread.is_alive():
            self._cycle()
            self._idle.set()
        else:
            self._idle.wait(timeout)
        return not self.points and not self.ops and not self.rows

    def close(self, timeout: float = 30.0) -> None:
        self._open_waits_for_rows = False
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._thread is None or not self._thread.is_alive():
            self._next_probe = 0.0
            self._cycle()  # one last try, the store may have come back meanwhile
        # Whatever is still in memory must survive the process.
        self._spool_memory()

    # -- the thread -----------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.is_set():
            if not self._wake.wait(self.interval):
                self.wants_rows = True  # an interval without rows: ask for them
            self._wake.clear()
            self._cycle()
            if not self._wake.is_set():
                self._idle.set()

    def _cycle(self) -> None:
        with self._cycle_lock:
            try:
                self._cycle_locked()
            except Exception as exc:  # never let the thread die: spool and carry on
                self._failed(exc)

    def _cycle_locked(self) -> None:
        if self._open_waits_for_rows:
            if not self.rows:
                return
            self._open_waits_for_rows = False
        self.convert_rows()
        if (self.down or not self.run.is_open) and not self._store_back():
            self._spool_memory()
            return
        if (self.points or self.ops) and not self._store_back_quick():
            return
        while self.ops:
            kind, payload, extra = self.ops[0]
            self._apply(kind, payload, extra)
            self.ops.popleft()
        while self.points:
            batch = self._take(METRICS_PER_BATCH)
            try:
                self.run.log_points(batch)
            except Exception as exc:
                if is_client_error(exc):
                    self._drop(exc, len(batch))
                    continue
                self.spool.add_points(batch)
                self.spooled += len(batch)
                raise
            self.written += len(batch)

    def _take(self, n: int) -> list[Point]:
        batch: list[Point] = []
        popleft = self.points.popleft
        try:
            while len(batch) < n:
                batch.append(popleft())
        except IndexError:
            pass
        rename = self.rename
        if rename:
            batch = [(rename.get(k, k), v, s, t) for k, v, s, t in batch]
        return batch

    def _apply(self, kind: str, payload: Any, extra: Any) -> None:
        try:
            if kind == "p":
                for part in chunks(payload.items(), PARAMS_PER_BATCH):
                    self.run.log_params(dict(part))
            elif kind == "t":
                for part in chunks(payload.items(), PARAMS_PER_BATCH):
                    self.run.set_tags(dict(part))
            elif kind == "a":
                self.run.log_artifact(payload, extra)
            elif kind == "h":
                self.run.start_helper()
        except Exception as exc:
            if not is_client_error(exc):
                raise
            self._drop(exc, 1)

    def _store_back_quick(self) -> bool:
        """A live store gets a probe before each write: a request to a dead HTTP server would
        sit in MLflow's retry backoff for minutes, holding everything behind it."""
        if self.run.reachable():
            return True
        self._failed(ConnectionError(f"{redact_uri(self.run.spec.uri)} does not answer"))
        return False

    def _store_back(self) -> bool:
        """Open the run and replay the spool once the store answers; False while it does not."""
        now = time.monotonic()
        if now < self._next_probe and not self._stop.is_set():
            return False
        self._next_probe = now + self.probe_interval
        if not self.run.reachable():
            return False
        try:
            newly_opened = not self.run.is_open
            self.run.open()
            if newly_opened and self.on_open is not None:
                self.on_open()
            replayed, _ = self.replay()
        except Exception as exc:
            if is_client_error(exc):
                raise
            log.debug("MLflow store still failing: %s", exc)
            self._failed(exc)  # warns once: a new run is first opened here, not by the job
            return False
        if self.down or replayed:
            log.warning(
                "MLflow store %s answers again: wrote %d spooled points",
                redact_uri(self.run.spec.uri),
                replayed,
            )
        self.down = False
        return True

    def replay(self) -> tuple[int, str | None]:
        """Write the spool to the open run, then delete it.

        Returns the number of points and the status the job ended with, if it ended while the
        store was away (a live job resuming the run ignores it: the run is running again).
        """
        records = self.spool.read()
        if not records:
            return 0, None
        points: list[Point] = []
        end: str | None = None
        for record in records:
            if "m" in record:
                key, value, step, ms = record["m"]
                points.append((key, value, int(step), int(ms)))
            elif "p" in record:
                self._apply("p", record["p"], None)
            elif "t" in record:
                self._apply("t", record["t"], None)
            elif "a" in record:
                self._apply("a", record["a"][0], record["a"][1])
            elif "end" in record:
                end = record["end"]
        for batch in chunks(points, METRICS_PER_BATCH):
            self.run.log_points(batch)
        self.spool.clear()
        self.replayed += len(points)
        return len(points), end

    def _spool_memory(self) -> None:
        self.convert_rows()
        while self.ops:
            kind, payload, extra = self.ops.popleft()
            if kind == "p":
                self.spool.add_params(payload)
            elif kind == "t":
                self.spool.add_tags(payload)
            elif kind == "a":
                self.spool.add_artifact(payload, extra)
        if self.points:
            batch = self._take(len(self.points))
            self.spool.add_points(batch)
            self.spooled += len(batch)

    def _failed(self, exc: Exception) -> None:
        self.down = True
        self._next_probe = time.monotonic() + self.probe_interval
        if not self.warned:
            self.warned = True
            log.warning("%s (%s)", unreachable_message(self.run.spec.uri), _short(exc))
        self._spool_memory()

    def _drop(self, exc: Exception, count: int) -> None:
        if not self._dropped_warned:
            self._dropped_warned = True
            log.warning("MLflow refused %d item(s), dropped: %s", count, _short(exc))


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200] if text else ''}"


class WorkerThread:
    """One daemon thread that runs submitted jobs in order, off the training thread.

    What the TensorBoard logger and the hook logger write (event protos, JSON lines, files) is
    handed over here in blocks: the training thread only appends ``(fn, args)`` to a deque and
    sets an event, once per block, not once per step. Jobs run in submission order, so files
    keep the order of the hooks. :meth:`drain` waits until every job submitted so far has run
    (the flush at train end, test end and job end); :meth:`close` drains and stops the thread.
    A job that raises is logged once and does not stop the jobs after it.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._jobs: deque[tuple[Callable[..., Any], tuple[Any, ...]]] = deque()
        self._wake = threading.Event()
        self._done = threading.Condition()
        self._submitted = 0  # written by the submitting thread only
        self._finished = 0  # written by the worker, under _done
        self._closed = False
        self._warned = False
        self._thread: threading.Thread | None = None

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        if self._closed:  # after close: run it here, nothing is lost
            self._run(fn, args)
            return
        self._jobs.append((fn, args))
        self._submitted += 1
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
            self._thread.start()
        self._wake.set()

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until the jobs submitted so far have run; False on timeout."""
        target = self._submitted
        if self._thread is None:
            return True
        with self._done:
            return self._done.wait_for(lambda: self._finished >= target, timeout)

    def close(self, timeout: float | None = 60.0) -> None:
        self._closed = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        while self._jobs:  # the thread is gone (or never ran): finish here
            fn, args = self._jobs.popleft()
            self._run(fn, args)

    def _run(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        try:
            fn(*args)
        except Exception as exc:  # a writer must never take the job down
            if not self._warned:
                self._warned = True
                log.warning("%s: writing failed: %s", self.name, _short(exc))

    def _loop(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            while self._jobs:
                fn, args = self._jobs.popleft()
                self._run(fn, args)
                with self._done:
                    self._finished += 1
                    self._done.notify_all()
            if self._closed and not self._jobs:
                return
