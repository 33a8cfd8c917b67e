"""Fixtures of the tracking tests: one real ``mlflow server`` for the session, tiny data.

The server takes ~30 s to start on a loaded 2-core machine, so its process is launched as soon
as the first test of a module that needs it runs, and waited for only by the tests that need it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from mlflow import MlflowClient

from callbacks.mlflow import MLflowLogger
from callbacks.tensorboard import TensorBoardLogger
from callbacks.timing import Timing
from tests.tracking.helpers import (
    BATCH,
    CLASSES,
    SECRET,
    STEPS,
    Job,
    Server,
    StopsTraining,
    free_port,
    make_context,
    run_job,
)


def _needs_server(item: pytest.Item) -> bool:
    return "mlflow_server" in getattr(item, "fixturenames", ()) or "[server]" in item.nodeid


@pytest.fixture(scope="session")
def _server_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("mlflow-server")
    server = Server(root=root, port=free_port(), log=root / "server.log")
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _boot_server_early(request: pytest.FixtureRequest, _server_process: Server) -> None:
    """Launch the server at the first test of a module that has tests needing it, so it boots
    while that module's SQLite tests run. Per module, not per session: under pytest-xdist every
    worker collects every test, and a worker that never runs a server test must not boot one."""
    _server_process.boot_if_module_needs(request, _needs_server)


@pytest.fixture(scope="session")
def mlflow_server(_server_process: Server) -> Server:
    return _server_process.ready()


@pytest.fixture(autouse=True)
def _quiet_logs() -> None:
    for name in ("mlflow", "alembic", "absl", "tensorflow", "urllib3"):
        logging.getLogger(name).setLevel(logging.ERROR)


@pytest.fixture(scope="session")
def arrays() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (STEPS * BATCH, 8, 8, 3)).astype("float32")
    y = rng.integers(0, len(CLASSES), STEPS * BATCH)
    return x, y


def full_job(tmp: Path, uri: str, arrays: Any, monkeypatch: pytest.MonkeyPatch) -> Job:
    # A server with auth reads these itself; they must never end up in the run.
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "trainer")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", SECRET)
    context = make_context(tmp / "run", uri, arrays, log_model=True, tags={"team": "vision"})
    checkpoint = tmp / "best.keras"
    checkpoint.write_bytes(b"not really a model, only uploaded")
    mlflow_cb = MLflowLogger(flush_interval=0.5)
    tb_cb = TensorBoardLogger()
    extra = [StopsTraining(checkpoint), Timing()]  # Timing after the loggers: after_stack
    return run_job(context, [mlflow_cb, tb_cb], arrays, extra=extra)


STORES = ["sqlite", pytest.param("server", marks=pytest.mark.server)]


@pytest.fixture(scope="session", params=STORES)
def job(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, arrays: Any):
    tmp = tmp_path_factory.mktemp(f"job-{request.param}")
    if request.param == "sqlite":
        uri = f"sqlite:///{tmp / 'mlflow.db'}"
    else:
        uri = request.getfixturevalue("mlflow_server").uri
    with pytest.MonkeyPatch.context() as monkeypatch:
        done = full_job(tmp, uri, arrays, monkeypatch)
    logger = done.callbacks[0]
    client = MlflowClient(uri)
    return done, client, client.get_run(logger.run.run_id)
