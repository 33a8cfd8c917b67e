"""trainkit.tracking.sqlite_metrics: a SQLite store written directly holds exactly what
``MlflowClient.log_batch`` would have written, row for row."""

from __future__ import annotations

import logging
import sqlite3

import pytest
from mlflow.entities import Metric
from mlflow.exceptions import MlflowException

from trainkit.tracking.sqlite_metrics import SQLiteMetrics, handles
from trainkit.tracking.store import open_client

NAN, INF = float("nan"), float("inf")
# (key, value, step, ms) batches with what the latest-value rule must get right: NaN and
# infinities, a point twice in one batch and again in a later one, a step older than the
# stored latest, the same step at a later time, a key first seen in a later batch
BATCHES = [
    [(k, 0.5 + i / 100, i, 1_000 + i) for i in range(1, 40) for k in ("loss", "accuracy")],
    [
        ("loss", NAN, 40, 2_000),
        ("accuracy", INF, 40, 2_000),
        ("lr", -INF, 3, 2_000),
        ("accuracy", 0.25, 5, 3_000),  # older step than the stored latest (39)
        ("loss", 0.75, 41, 2_500),
        ("loss", 0.75, 41, 2_500),  # twice in the batch
    ],
    [
        ("loss", 0.75, 41, 2_500),  # again in a later batch
        ("loss", 0.125, 41, 2_600),  # the same step, later
        ("val_loss", 0.5, 41, 2_600),
    ],
]


def rows(database, table: str, run_id: str) -> list[tuple]:
    with sqlite3.connect(database) as connection:
        found = connection.execute(
            f"SELECT key, value, timestamp, step, is_nan FROM {table} WHERE run_uuid = ?",
            (run_id,),
        ).fetchall()
    return sorted(found)


def test_a_store_written_directly_reads_back_as_one_written_by_log_batch(tmp_path):
    database = tmp_path / "mlflow.db"
    uri = f"sqlite:///{database}"
    client = open_client(uri)  # a copy of a made store: no schema migrations
    by_mlflow, direct = (client.create_run("0").info.run_id for _ in range(2))
    writer = SQLiteMetrics(uri, client)
    for batch in BATCHES:
        metrics = [Metric(key, value, ms, step) for key, value, step, ms in batch]
        client.log_batch(by_mlflow, metrics=metrics, synchronous=True)
        writer.log(direct, batch)
    assert writer.fast  # no fallback happened
    for table in ("metrics", "latest_metrics"):
        assert rows(database, table, direct) == rows(database, table, by_mlflow), table
    assert len(rows(database, "metrics", direct)) == 78 + 5 + 2  # the duplicates dropped
    # and through MLflow's reading API: the latest values and a history with its NaN
    latest = client.get_run(direct).data.metrics
    assert latest == client.get_run(by_mlflow).data.metrics
    assert latest["loss"] == 0.125 and latest["accuracy"] == 1.7976931348623157e308
    history = client.get_metric_history(direct, "loss")
    assert [m.step for m in history] == sorted(m.step for m in history)
    assert sum(m.value != m.value for m in history) == 1  # the NaN, read back as NaN
    writer.close()


def test_a_missing_or_deleted_run_and_bad_points_are_refused_with_mlflows_errors(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = open_client(uri)  # a copy of a made store: no schema migrations
    run_id = client.create_run("0").info.run_id
    writer = SQLiteMetrics(uri, client)
    with pytest.raises(MlflowException) as missing:
        writer.log("0" * 32, BATCHES[2])
    assert missing.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    client.delete_run(run_id)
    with pytest.raises(MlflowException) as deleted:
        writer.log(run_id, BATCHES[2])
    assert deleted.value.error_code == "INVALID_PARAMETER_VALUE"
    assert "deleted" in str(deleted.value)
    client.restore_run(run_id)
    for bad in (("bad key!?*", 1.0, 0, 1), ("loss", "high", 0, 1)):
        with pytest.raises(MlflowException, match="Invalid value") as refused:
            writer.log(run_id, [*BATCHES[2], bad])
        assert refused.value.error_code == "INVALID_PARAMETER_VALUE"
    assert rows(tmp_path / "mlflow.db", "metrics", run_id) == []
    assert writer.fast  # MLflow's answers, not a failure of the direct path


def test_tables_it_does_not_expect_send_every_write_through_log_batch(tmp_path, caplog):
    """A schema that has moved on (a later MLflow's metrics table with a column more, which
    this writer would leave empty) costs a warning, once, and no point."""
    database = tmp_path / "mlflow.db"
    uri = f"sqlite:///{database}"
    client = open_client(uri)  # a copy of a made store: no schema migrations
    run_id = client.create_run("0").info.run_id
    with sqlite3.connect(database) as connection:
        connection.execute("ALTER TABLE metrics ADD COLUMN dataset_digest TEXT")
    writer = SQLiteMetrics(uri, client)
    with caplog.at_level(logging.WARNING, "trainkit.tracking.sqlite_metrics"):
        for batch in BATCHES:
            writer.log(run_id, batch)
    warnings = [r for r in caplog.records if "MlflowClient.log_batch" in r.getMessage()]
    assert len(warnings) == 1 and "dataset_digest" in warnings[0].getMessage()
    assert not writer.fast
    assert len(client.get_metric_history(run_id, "loss")) == 39 + 3


def test_only_sqlite_stores_are_written_directly():
    assert handles("sqlite:////tmp/mlflow.db") and handles("sqlite:///mlflow.db")
    assert not handles("http://127.0.0.1:5000") and not handles("/tmp/mlruns")
    assert not handles("postgresql://u@h/db")


def test_a_store_busy_with_another_write_is_waited_for_as_mlflow_waits(tmp_path):
    """Another job's transaction holds the store's write lock for a second: the batch waits
    for it (MLflow's 20 s busy timeout, not sqlite3's 5 s) and lands; the direct path stays."""
    import threading
    import time

    database = tmp_path / "mlflow.db"
    uri = f"sqlite:///{database}"
    client = open_client(uri)
    run_id = client.create_run("0").info.run_id
    writer = SQLiteMetrics(uri, client)
    with writer.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == 20000
    other = sqlite3.connect(database, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")  # the write lock, as another writer's transaction holds it
    threading.Timer(1.0, lambda: other.execute("COMMIT")).start()
    start = time.monotonic()
    writer.log(run_id, BATCHES[2])
    assert time.monotonic() - start >= 0.9
    other.close()
    assert writer.fast and len(rows(database, "metrics", run_id)) == 3


def test_a_store_busy_past_the_wait_is_a_store_error_to_retry(tmp_path, monkeypatch):
    """The lock held past the busy timeout: MLflow's INTERNAL_ERROR, as ``log_batch`` raises
    for it (the writer spools and retries; a helper process's job keeps its helper), and the
    next batch, once the lock is gone, is written directly."""
    from trainkit.tracking import sqlite_metrics
    from trainkit.tracking.store import is_client_error

    monkeypatch.setattr(sqlite_metrics, "BUSY_TIMEOUT_MS", 200)
    database = tmp_path / "mlflow.db"
    uri = f"sqlite:///{database}"
    client = open_client(uri)
    run_id = client.create_run("0").info.run_id
    writer = SQLiteMetrics(uri, client)
    other = sqlite3.connect(database, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    with pytest.raises(MlflowException) as busy:
        writer.log(run_id, BATCHES[2])
    assert busy.value.error_code == "INTERNAL_ERROR" and not is_client_error(busy.value)
    assert "locked" in str(busy.value)
    other.execute("COMMIT")
    other.close()
    writer.log(run_id, BATCHES[2])
    assert writer.fast and len(rows(database, "metrics", run_id)) == 3
