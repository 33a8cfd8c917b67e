"""A new SQLite store is a copy of a cached, migrated empty store: same schema, usable at once."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from mlflow import MlflowClient

from trainkit.tracking import sqlite_template
from trainkit.tracking.store import open_client


def schema(database: Path) -> dict[str, set[str]]:
    """Each table's and index's definition, as a set of lines: MLflow's own creation orders
    constraints and indexes differently from one run to the next."""
    with sqlite3.connect(database) as db:
        rows = db.execute("SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL")
        return {name: {line.strip(" ,") for line in sql.splitlines()} for name, sql in rows}


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def cache(shared_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """One template for the module's tests (it takes MLflow's seconds to make); each test
    runs from its own folder."""
    monkeypatch.setenv("TRAINKIT_CACHE_DIR", str(shared_cache))
    monkeypatch.chdir(tmp_path)
    return shared_cache


def test_a_copied_store_has_mlflows_schema_and_takes_runs(cache: Path, tmp_path: Path) -> None:
    made = tmp_path / "made.db"
    MlflowClient(f"sqlite:///{made}").search_experiments()  # MLflow's own creation

    client = open_client(f"sqlite:///{tmp_path / 'copied.db'}")

    assert [p.name for p in cache.iterdir()] == [sqlite_template._template_name()]
    assert schema(tmp_path / "copied.db") == schema(made)
    default = client.get_experiment("0")
    assert default.name == "Default"
    assert default.artifact_location == str(tmp_path / "mlruns" / "0")
    run = client.create_run(client.create_experiment("e")).info.run_id
    client.log_metric(run, "loss", 0.5, step=3)
    assert [(m.step, m.value) for m in client.get_metric_history(run, "loss")] == [(3, 0.5)]


def test_an_existing_store_is_never_overwritten(cache: Path, tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'kept.db'}"
    client = open_client(uri)
    experiment = client.create_experiment("kept")

    assert open_client(uri).get_experiment(experiment).name == "kept"
    assert sqlite_template.seed(tmp_path / "kept.db") is False


@pytest.mark.slow
def test_a_broken_template_falls_back_to_mlflow(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "broken-cache"
    monkeypatch.setenv("TRAINKIT_CACHE_DIR", str(cache))
    monkeypatch.chdir(tmp_path)
    cache.mkdir()
    (cache / sqlite_template._template_name()).write_text("not a database")

    client = open_client(f"sqlite:///{tmp_path / 'fallback.db'}")

    assert client.get_experiment("0").name == "Default"  # MLflow made it, and it works
    assert client.create_experiment("e")


@pytest.mark.slow
def test_the_template_can_be_turned_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRAINKIT_CACHE_DIR", str(tmp_path / "unused-cache"))
    monkeypatch.setenv("TRAINKIT_SQLITE_TEMPLATE", "0")

    open_client(f"sqlite:///{tmp_path / 'plain.db'}").search_experiments()

    assert not (tmp_path / "unused-cache").exists()
