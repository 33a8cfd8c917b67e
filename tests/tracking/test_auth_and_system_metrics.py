"""A tracking server with basic auth (credentials from the environment, never logged), and
MLflow's system metrics (``tracking.system_metrics=true``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import keras
import pytest
from mlflow import MlflowClient

from callbacks.mlflow import MLflowLogger
from tests.tracking.helpers import Server, free_port, make_context, run_job

PASSWORD = "auth-S3cret-never-logged"


class AuthServer(Server):
    """``mlflow server --app-name basic-auth`` with its own user store and admin password."""

    def launch(self) -> None:
        ini = self.root / "basic_auth.ini"
        ini.write_text(
            "[mlflow]\n"
            "default_permission = READ\n"
            f"database_uri = sqlite:///{self.root / 'auth.db'}\n"
            "admin_username = admin\n"
            f"admin_password = {PASSWORD}\n"
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        )
        super().launch(
            extra_args=("--app-name", "basic-auth"),
            extra_env={
                "MLFLOW_AUTH_CONFIG_PATH": str(ini),
                "MLFLOW_FLASK_SERVER_SECRET_KEY": "trainkit-tests-csrf-key",
            },
        )


@pytest.fixture(scope="module")
def _auth_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthServer]:
    root = tmp_path_factory.mktemp("mlflow-auth")
    server = AuthServer(root=root, port=free_port(), log=root / "server.log")
    yield server
    server.stop()


@pytest.fixture(scope="module", autouse=True)
def _boot_auth_server_early(request: pytest.FixtureRequest, _auth_process: AuthServer) -> None:
    """Launch the auth server at this module's first test (the system-metrics test, first in
    the file), so it boots while that test runs; ``auth_server`` waits for it."""
    _auth_process.boot_if_module_needs(
        request, lambda item: "auth_server" in getattr(item, "fixturenames", ())
    )


@pytest.fixture(scope="module")
def auth_server(_auth_process: AuthServer) -> AuthServer:
    _auth_process.ready()
    return _auth_process


def files_containing(root: Path, needle: str) -> list[Path]:
    hits = []
    for path in root.rglob("*"):
        if path.is_file() and needle.encode() in path.read_bytes():
            hits.append(path)
    return hits


# First in the file: the auth server boots in the background while it runs.
@pytest.mark.slow
def test_system_metrics_are_logged(
    tmp_path: Path, arrays: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.2")
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLES_BEFORE_LOGGING", "1")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    context = make_context(tmp_path / "run", uri, arrays, system_metrics=True)

    class Slow(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            import time

            time.sleep(1.0)  # give the 0.2 s sampler time to take a few samples

    job = run_job(context, [MLflowLogger(flush_interval=0.5)], arrays, extra=[Slow()])
    assert job.status == "FINISHED"
    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("trainkit-tests").experiment_id])
    system = [key for key in run.data.metrics if key.startswith("system/")]
    assert "system/cpu_utilization_percentage" in system
    assert "system/system_memory_usage_megabytes" in system


@pytest.mark.server
def test_auth_server_with_credentials_from_the_environment(
    auth_server: AuthServer, tmp_path: Path, arrays: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", PASSWORD)
    context = make_context(tmp_path / "run", auth_server.uri, arrays)
    job = run_job(context, [MLflowLogger(flush_interval=0.5)], arrays)
    assert job.status == "FINISHED"

    client = MlflowClient(tracking_uri=auth_server.uri)
    experiment = client.get_experiment_by_name("trainkit-tests")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == list(
        range(1, 11)
    )
    everything = [*run.data.params.values(), *run.data.tags.values()]
    assert not [value for value in everything if PASSWORD in value]
    assert files_containing(tmp_path / "run", PASSWORD) == []
    assert files_containing(auth_server.root / "artifacts", PASSWORD) == []


@pytest.mark.server
def test_auth_server_refuses_without_credentials_and_training_goes_on(
    auth_server: AuthServer,
    tmp_path: Path,
    arrays: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    context = make_context(tmp_path / "run", auth_server.uri, arrays)
    job = run_job(context, [MLflowLogger(flush_interval=0.5, flush_timeout=5.0)], arrays)
    assert job.status == "FINISHED"
    assert len(job.history["loss"]) == 2
    spool = tmp_path / "run" / "mlflow_spool.jsonl"
    assert spool.exists() and len(spool.read_text().splitlines()) >= 10
