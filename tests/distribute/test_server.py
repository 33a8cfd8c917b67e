"""A team's tracking server: MLflow on a private PostgreSQL cluster, a job's run lands there."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.conftest import TINY, compose_config
from tests.distribute.helpers import free_ports
from tests.distribute.postgres import Postgres
from tests.tracking.helpers import server_env, stop_group
from trainkit import job

# A real PostgreSQL and mlflow server in subprocesses; on a loaded machine they take minutes.
pytestmark = [pytest.mark.slow, pytest.mark.server, pytest.mark.timeout(900)]

MLFLOW = str(Path(sys.executable).with_name("mlflow"))


def test_a_job_lands_on_an_mlflow_server_backed_by_postgresql(tmp_path: Path) -> None:
    from mlflow import MlflowClient

    pg_port, port = free_ports(2)
    postgres = Postgres.start(pg_port)
    server = None
    try:
        with (tmp_path / "server.log").open("wb") as log:
            server = subprocess.Popen(
                [
                    MLFLOW,
                    "server",
                    "--backend-store-uri",
                    postgres.uri,
                    "--serve-artifacts",
                    "--artifacts-destination",
                    str(tmp_path / "artifacts"),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--workers",
                    "1",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=server_env(),
                start_new_session=True,  # stop_group ends the server and its uvicorn child
            )
        uri = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 180
        while True:
            try:
                if requests.get(f"{uri}/health", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert server.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "mlflow server did not come up"
            time.sleep(0.2)

        # The job in this process (the server is what is tested, not the process boundary),
        # eagerly: tracing is not what this test is about.
        cfg = compose_config(
            [
                *TINY,
                "callbacks=minimal",
                "trainer.run_eagerly=true",
                "tracking=server",
                f"tracking.uri={uri}",
            ],
            run_dir=tmp_path / "run",
        )
        job.main(cfg)
        client = MlflowClient(uri)
        experiment = client.get_experiment_by_name("trainkit")
        runs = client.search_runs([experiment.experiment_id])
        assert len(runs) == 1 and runs[0].info.status == "FINISHED"
        assert "loss" in runs[0].data.metrics
        # The run's rows are in PostgreSQL, its artifacts in the server's artifact store.
        import sqlalchemy as sa

        with sa.create_engine(postgres.uri).connect() as db:
            stored = db.execute(sa.text("select run_uuid from runs")).scalars().all()
        assert stored == [runs[0].info.run_id]
        assert any((tmp_path / "artifacts").rglob("config.yaml"))
    finally:
        if server is not None:
            stop_group(server)
        postgres.stop()
