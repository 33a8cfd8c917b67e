"""Metric points written to a SQLite MLflow store in two statements a batch.

``MlflowClient.log_batch`` on MLflow's SQLAlchemy store builds one ORM object per metric, and
then one per key for the latest value, and flushes them through the session: 100-250 µs of
pure-Python CPU a metric on this project's machine (``benchmarks/store_writes.py``). A job
that logs three metrics at every 1 ms step spends a third to three quarters of a core on it,
and on two cores training loses that.

:class:`SQLiteMetrics` writes the same rows, 10-18 µs a point, with two statements that
SQLAlchemy compiles once from MLflow's own tables (``SqlMetric.__table__``,
``SqlLatestMetric.__table__``, so the columns are MLflow's), run with the DB-API's
``executemany``:

- one ``INSERT … ON CONFLICT DO NOTHING`` of every point (MLflow drops a point it already has,
  by the table's primary key, the same way);
- one upsert of the latest value of each key, kept only where ``(step, timestamp, value)`` is
  above the stored one: MLflow's ``_update_latest_metrics_if_necessary`` rule;
- NaN and infinities stored as MLflow stores them (``SqlAlchemyStore.sanitize_metric_value``);
- a key, value, step or time that MLflow refuses refused with MLflow's own check and error
  (``mlflow.utils.validation._validate_metric``: once a key, and for any value or step that
  is not a plain float or int);
- a run that does not exist or is not active refused with MLflow's error codes.

``tests/tracking/test_sqlite_metrics.py`` checks that a store written this way reads back
(history, latest values, NaN, duplicates, steps out of order) exactly as one written by
``log_batch``. If the store's tables ever have other columns than these (a later MLflow's
schema), or a write fails for a reason of its own, it logs one warning and every write goes
back to ``MlflowClient.log_batch``.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from trainkit.tracking.spool import Point  # (key, value, step, ms)

log = logging.getLogger(__name__)

# the columns of MLflow's metrics and latest_metrics tables, in the order of a row's values
COLUMNS = ("key", "value", "timestamp", "step", "is_nan", "run_uuid")


def handles(uri: str) -> bool:
    """Whether ``uri`` is a SQLite store, the one this writes to."""
    return uri.startswith("sqlite:")


def _sanitized(value: float) -> tuple[bool, float]:
    # SqlAlchemyStore.sanitize_metric_value's rule: that is a method of a store instance
    if math.isnan(value):
        return True, 0.0
    if math.isinf(value):
        return False, 1.7976931348623157e308 if value > 0 else -1.7976931348623157e308
    return False, value


# how long a write waits for another connection's lock: MLflow's sessions' wait (its
# ``make_managed_session``), where Python's sqlite3 waits 5 s
BUSY_TIMEOUT_MS = 20_000


def _as_mlflow_does(connection: Any, _record: Any) -> None:
    """Each new connection waits for a busy store as MLflow's sessions do, with its foreign
    keys on."""
    cursor = connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys = ON")
    cursor.close()


class SQLiteMetrics:
    """Writes runs' metric points to the SQLite store at ``uri``; ``fallback`` is the
    ``MlflowClient`` used if the fast path fails for a reason of its own."""

    def __init__(self, uri: str, fallback: Any) -> None:
        from mlflow.store.db.utils import create_sqlalchemy_engine
        from mlflow.store.tracking.dbmodels.models import SqlLatestMetric, SqlMetric, SqlRun
        from sqlalchemy import event as sa_event

        self.fallback = fallback
        self.engine = create_sqlalchemy_engine(uri)  # MLflow's settings (pool, echo ...)
        sa_event.listen(self.engine, "connect", _as_mlflow_does)
        self.metrics = SqlMetric.__table__
        self.latest = SqlLatestMetric.__table__
        self.runs = SqlRun.__table__
        self.fast = True
        self._checked = False
        self._compiled: tuple[str, str] | None = None
        self._valid_keys: set[str] = set()

    def log(self, run_id: str, points: list[Point]) -> None:
        """Write ``points`` to ``run_id``; raises ``MlflowException`` as ``log_batch`` does."""
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import INTERNAL_ERROR
        from sqlalchemy.exc import OperationalError

        if self.fast:
            try:
                if not self._checked:
                    self._check_tables()
                    self._checked = True
                self._write(run_id, points)
                return
            except MlflowException:
                raise  # MLflow's own answer, as log_batch would give it
            except OperationalError as exc:
                # the store busy past the wait (another job's write): what log_batch raises
                # then, so that the writer (or the helper's job) spools and retries the batch
                raise MlflowException(str(exc), error_code=INTERNAL_ERROR) from exc
            except Exception as exc:  # noqa: BLE001 - MLflow's own path decides from here
                self.fast = False
                log.warning(
                    "MLflow: writing metrics directly to the SQLite store failed (%s: %s); "
                    "writing them through MlflowClient.log_batch from now on",
                    type(exc).__name__,
                    exc,
                )
        from mlflow.entities import Metric

        metrics = [Metric(key, value, ms, step) for key, value, step, ms in points]
        self.fallback.log_batch(run_id, metrics=metrics, synchronous=True)

    def _write(self, run_id: str, points: list[Point]) -> None:
        from mlflow.utils.validation import _validate_metric

        rows = []
        latest: dict[str, tuple] = {}
        valid = self._valid_keys
        for key, value, step, ms in points:
            if key not in valid or type(value) is not float or type(step) is not int:
                # MLflow's own check (its error and message), once a key, and for a value or
                # step that is not a plain float or int
                _validate_metric(key, value, ms, step)
                valid.add(key)
            is_nan, value = _sanitized(float(value))
            row = (key, value, int(ms), int(step), is_nan, run_id)  # COLUMNS' order
            rows.append(row)
            best = latest.get(key)
            if best is None or (row[3], row[2], value) > (best[3], best[2], best[1]):
                latest[key] = row
        if not rows:
            return
        insert, upsert = self._statements()
        with self.engine.begin() as connection:
            self._check_active(connection, run_id)
            # the DB-API's executemany: SQLAlchemy's own, with a dict a row, costs 10x the CPU
            connection.exec_driver_sql(insert, rows)
            connection.exec_driver_sql(upsert, list(latest.values()))

    def _statements(self) -> tuple[str, str]:
        """The two statements, compiled once from MLflow's tables, with positional
        parameters in :data:`COLUMNS`' order."""
        if self._compiled is None:
            import sqlalchemy as sa
            from sqlalchemy.dialects.sqlite import insert

            dialect = self.engine.dialect
            positional = {c: sa.bindparam(c) for c in COLUMNS}
            add = insert(self.metrics).values(positional).on_conflict_do_nothing()
            new = insert(self.latest).values(positional)
            old, excluded = self.latest.c, new.excluded
            keep_newest = new.on_conflict_do_update(
                index_elements=[old.key, old.run_uuid],
                set_={c: excluded[c] for c in ("value", "timestamp", "step", "is_nan")},
                where=sa.tuple_(excluded.step, excluded.timestamp, excluded.value)
                > sa.tuple_(old.step, old.timestamp, old.value),
            )
            compiled = [s.compile(dialect=dialect) for s in (add, keep_newest)]
            for statement in compiled:
                if statement.positiontup != list(COLUMNS):
                    raise RuntimeError(f"parameters in the order {statement.positiontup}")
            self._compiled = (str(compiled[0]), str(compiled[1]))
        return self._compiled

    def _check_tables(self) -> None:
        """The store's tables have exactly the columns this writes (a column it would leave
        empty, or one it names that is gone, would store wrong rows without an error)."""
        import sqlalchemy as sa

        found = sa.inspect(self.engine)
        for table in (self.metrics, self.latest):
            columns = {c["name"] for c in found.get_columns(table.name)}
            if columns != set(COLUMNS):
                raise RuntimeError(
                    f"the store's {table.name} table has the columns {sorted(columns)}, "
                    f"not {sorted(COLUMNS)}"
                )

    def _check_active(self, connection: Any, run_id: str) -> None:
        import sqlalchemy as sa
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE, RESOURCE_DOES_NOT_EXIST

        stage = connection.execute(
            sa.select(self.runs.c.lifecycle_stage).where(self.runs.c.run_uuid == run_id)
        ).scalar()
        if stage is None:
            raise MlflowException(
                f"Run with id={run_id} not found", error_code=RESOURCE_DOES_NOT_EXIST
            )
        if stage != "active":
            raise MlflowException(
                f"The run {run_id} must be in the 'active' state. Current state is {stage}.",
                error_code=INVALID_PARAMETER_VALUE,
            )

    def close(self) -> None:
        self.engine.dispose()
