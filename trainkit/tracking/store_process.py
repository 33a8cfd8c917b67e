"""A local MLflow store's metric writes, done in a helper process instead of the job's.

MLflow's SQLAlchemy store spends about 250 µs of pure-Python CPU on each metric of a
``log_batch`` (ORM objects, a flush, the latest-metric rows) on the machine this was measured on
(``docs/benchmarks.md``). Done by the MLflow writer thread, a batch of 1,000 points holds the
GIL for a quarter of a second in 5 ms slices: each time the training thread comes back from a
TensorFlow op in that time, it waits up to the interpreter's switch interval for the GIL. A GPU
step of a small model takes about a millisecond, so that wait is what logging every step cost.

Here the writer thread only pickles the points to a child process (``python -m
trainkit.tracking.store_process URI``, MLflow's client and nothing of TensorFlow) and waits on
the pipe with the GIL released; the child writes them (to SQLite with
:class:`trainkit.tracking.sqlite_metrics.SQLiteMetrics`, a tenth of ``log_batch``'s CPU;
to a folder store with ``MlflowClient.log_batch``). The
child answers each batch with ``("ok",)`` or ``("error", message, mlflow_error_code)``; it
exits when its input closes, so a job killed with SIGKILL leaves no child behind.

:class:`trainkit.tracking.store.TrackedRun` starts it for a store on this machine (``sqlite:``,
a file path) when a fit that will log :data:`HELPER_AT_STEPS` steps begins (the child imports
MLflow, about 2 s of CPU, while the training step traces), or else once a single batch holds
:data:`START_AT_POINTS` points: a short job never pays for it. A remote ``mlflow server`` does that
work in its own process already. ``TRAINKIT_MLFLOW_STORE_PROCESS=0`` keeps every write in the
job's process. If the child dies, the batch in hand fails like a store that
does not answer (the writer spools it and retries), and the run goes back to writing
in-process: a helper is not started twice.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any, BinaryIO

from trainkit.tracking import sqlite_metrics
from trainkit.tracking.spool import Point  # (key, value, step, ms), as everywhere

# The helper's start costs 2-4 s of CPU (it imports MLflow); in-process, the store costs about
# 0.25 ms of CPU a point. A fit that will log at least this many steps (3,000 points or more,
# in batches that each hold the GIL for a quarter of a second) starts it at its beginning ...
HELPER_AT_STEPS = 1000
# ... and a batch this large (a job logging some 500 points a second) starts it when it comes.
START_AT_POINTS = 1000


# Set to 0 to keep every write in the job's process (what benchmarks/callback_overhead.py
# compares the helper against).
ENV_SWITCH = "TRAINKIT_MLFLOW_STORE_PROCESS"


def wanted(uri: str) -> bool:
    """Whether writes to ``uri`` may go through a helper process: a store whose work MLflow's
    client does itself (SQLite, a folder), not a server, unless ENV_SWITCH is 0."""
    if os.environ.get(ENV_SWITCH, "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    return uri.startswith(("sqlite:", "file:", "/", ".")) or "://" not in uri


class StoreProcessError(ConnectionError):
    """The helper process is gone: the store counts as not answering, the points are spooled."""


class StoreProcess:
    """One helper process writing metrics to the store at ``uri``."""

    def __init__(self, uri: str) -> None:
        package_root = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
        self.process = subprocess.Popen(
            [sys.executable, "-m", "trainkit.tracking.store_process", uri],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            start_new_session=True,  # a Ctrl-C in the terminal is the job's to handle, not its
        )

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def log_batch(self, run_id: str, points: list[Point]) -> None:
        """Write ``points`` to ``run_id``; raises what MLflow raised, or StoreProcessError."""
        from mlflow.exceptions import MlflowException

        try:
            assert self.process.stdin is not None and self.process.stdout is not None
            pickle.dump((run_id, points), self.process.stdin, protocol=pickle.HIGHEST_PROTOCOL)
            self.process.stdin.flush()
            reply = pickle.load(self.process.stdout)
        except (OSError, EOFError, pickle.UnpicklingError) as exc:
            self.close()
            raise StoreProcessError(f"the MLflow store's helper process ended ({exc})") from exc
        if reply[0] == "ok":
            return
        _, message, code = reply
        if code:
            from mlflow.protos.databricks_pb2 import ErrorCode

            raise MlflowException(message, error_code=ErrorCode.Value(code))
        raise StoreProcessError(message)

    def close(self, timeout: float = 10.0) -> None:
        with contextlib.suppress(OSError):
            if self.process.stdin is not None:
                self.process.stdin.close()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        with contextlib.suppress(OSError):
            if self.process.stdout is not None:
                self.process.stdout.close()


def serve(uri: str, inbox: BinaryIO, outbox: BinaryIO) -> None:
    """The child's loop: a batch in, an answer out, until the input closes."""
    import logging

    from mlflow import MlflowClient
    from mlflow.entities import Metric
    from mlflow.exceptions import MlflowException

    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    client = MlflowClient(uri)
    direct = sqlite_metrics.SQLiteMetrics(uri, client) if sqlite_metrics.handles(uri) else None
    while True:
        try:
            run_id, points = pickle.load(inbox)
        except (EOFError, OSError):
            return
        try:
            if direct is not None:
                direct.log(run_id, points)
            else:
                metrics = [Metric(key, value, ms, step) for key, value, step, ms in points]
                client.log_batch(run_id, metrics=metrics, synchronous=True)
            reply: tuple[Any, ...] = ("ok",)
        except MlflowException as exc:
            reply = ("error", exc.message, exc.error_code)
        except Exception as exc:  # noqa: BLE001 - reported to the job, which spools and retries
            reply = ("error", f"{type(exc).__name__}: {exc}", None)
        pickle.dump(reply, outbox, protocol=pickle.HIGHEST_PROTOCOL)
        outbox.flush()


def main() -> int:
    inbox, outbox = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # anything printed must not corrupt the answers
    serve(sys.argv[1], inbox, outbox)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
