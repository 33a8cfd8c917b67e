"""A new SQLite MLflow store in a tenth of a second instead of several seconds.

Building ``MlflowClient("sqlite:///new.db")`` runs MLflow's schema creation and every Alembic
migration since MLflow 1.x: 5 s on a quiet 2-core machine, 30 s on a busy one, paid by every
new project folder (and every test that makes a store). The result depends only on the MLflow
version, so trainkit makes it once into a cache and copies it:

* the template is ``$TRAINKIT_CACHE_DIR`` (default ``~/.cache/trainkit``)
  ``/mlflow-<version>-<schema>.db``, made by MLflow itself (an empty store, migrated),
  written to a temporary name and renamed, so a half-made template is never copied;
* the copy gets what MLflow's own creation would have written for this process: the
  ``Default`` experiment's artifact location (``./mlruns/0`` from the current directory) and
  its creation time.

Anything unexpected (no cache directory, a read-only home, a template that is not a SQLite
store of this version) falls back to MLflow's own creation: the cache only ever saves time.
``TRAINKIT_SQLITE_TEMPLATE=0`` turns it off.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import time
from pathlib import Path

log = logging.getLogger("trainkit.tracking")


def cache_dir() -> Path:
    return Path(os.environ.get("TRAINKIT_CACHE_DIR") or Path.home() / ".cache" / "trainkit")


def _template_name() -> str:
    import mlflow
    from mlflow.store.db_migrations import __file__ as migrations_init

    # The set of migrations names the schema as exactly as MLflow's version does; both in the
    # name keep a template made by an editable MLflow checkout from outliving its schema.
    versions = sorted(p.name for p in (Path(migrations_init).parent / "versions").glob("*.py"))
    schema = hashlib.sha1("\n".join(versions).encode()).hexdigest()[:12]
    return f"mlflow-{mlflow.__version__}-{schema}.db"


def _make_template(path: Path) -> None:
    from mlflow import MlflowClient

    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
    partial.unlink(missing_ok=True)
    client = MlflowClient(f"sqlite:///{partial}")
    client.search_experiments(max_results=1)  # the tables exist once this returns
    _dispose(f"sqlite:///{partial}")
    os.replace(partial, path)


def _dispose(uri: str) -> None:
    """Close the engine MLflow keeps for ``uri``, so the file is complete and unlocked."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    engines = getattr(SqlAlchemyStore, "_engine_map", None)
    engine = engines.pop(uri, None) if isinstance(engines, dict) else None
    if engine is not None:
        engine.dispose()


def seed(database: Path) -> bool:
    """Make ``database`` an empty, migrated MLflow store by copying the cached template.

    Returns False (and leaves nothing behind) when it could not, so the caller lets MLflow
    create the store itself. The caller holds the lock that serialises store creation.
    """
    if os.environ.get("TRAINKIT_SQLITE_TEMPLATE", "1") == "0" or database.exists():
        return False
    try:
        template = cache_dir() / _template_name()
        if not template.exists():
            template.parent.mkdir(parents=True, exist_ok=True)
            _make_template(template)
        source = sqlite3.connect(f"file:{template}?mode=ro", uri=True)
        target = sqlite3.connect(database)
        try:
            source.backup(target)  # a consistent copy, whatever the source's journal mode
            now = int(time.time() * 1000)
            target.execute(
                "UPDATE experiments SET artifact_location = ?, creation_time = ?, "
                "last_update_time = ? WHERE experiment_id = 0",
                (str(Path("mlruns").resolve() / "0"), now, now),
            )
            target.commit()
        finally:
            target.close()
            source.close()
        return True
    except Exception as exc:  # noqa: BLE001 - the cache only saves time; MLflow can do it all
        log.debug("no SQLite template (%s): MLflow creates the store", exc)
        database.unlink(missing_ok=True)
        return False
