"""Helpers of the distribution tests: jobs started as users start them, in subprocesses."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests import preloaded

ROOT = Path(__file__).resolve().parents[2]
LAUNCH = Path(__file__).with_name("launch.py")


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports free on 127.0.0.1 right now."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def job_env(**extra: str) -> dict[str, str]:
    """The environment of a job: this checkout's code, no inherited MLflow or cluster settings."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MLFLOW_", "TF_CONFIG", "HYDRA_", "SLURM_"))
    }
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    env.update(extra)
    return env


def tf_config(ports: list[int], index: int) -> str:
    return json.dumps(
        {
            "cluster": {"worker": [f"127.0.0.1:{port}" for port in ports]},
            "task": {"type": "worker", "index": index},
        }
    )


@dataclass
class Started:
    """A job process and where its output goes."""

    process: subprocess.Popen
    log: Path
    started: float

    def wait(self, timeout: float) -> tuple[int, str, float]:
        """(exit status, output, wall seconds); the process is killed after ``timeout``."""
        try:
            code = self.process.wait(timeout)
        except BaseException:  # our timeout, pytest-timeout's, Ctrl-C: never leave it running
            self.process.kill()
            self.process.wait(10)
            code = -9
            if not isinstance(sys.exc_info()[1], subprocess.TimeoutExpired):
                raise
        return code, self.log.read_text(errors="replace"), time.monotonic() - self.started


def start_job(
    cwd: Path, overrides: list[str], name: str = "job", env: dict[str, str] | None = None
) -> Started:
    """``python run.py OVERRIDES`` (through launch.py) in ``cwd``; the SQLite store is
    ``cwd/mlflow.db``."""
    log = cwd / f"{name}.out"
    with log.open("wb") as out:
        process = preloaded.Popen(
            [sys.executable, str(LAUNCH), *overrides],
            cwd=cwd,
            env=env or job_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    return Started(process, log, time.monotonic())


def run_job(cwd: Path, overrides: list[str], timeout: float = 600, **kwargs: Any):
    code, out, seconds = start_job(cwd, overrides, **kwargs).wait(timeout)
    assert code == 0, out[-4000:]
    return out, seconds


def events(run_dir: Path) -> list[dict[str, Any]]:
    """The hook logger's ``events.jsonl``."""
    return [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]


def mlflow_runs(db: Path) -> list[Any]:
    """Every run of every experiment in a SQLite store."""
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{db}")
    ids = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(ids, max_results=1000)


def read_weights(path: Path) -> list[Any]:
    """Every array of a Keras ``.weights.h5`` file, in a stable order."""
    import h5py

    arrays: list[Any] = []
    with h5py.File(path, "r") as f:
        f.visititems(
            lambda name, obj: arrays.append((name, obj[()])) if hasattr(obj, "shape") else None
        )
    return sorted(arrays, key=lambda item: item[0])


def backup_weights(folder: Path) -> list[Any]:
    """The variables of the state a ``Backup`` folder holds (``.npz``, or ``.weights.h5``)."""
    meta = json.loads((folder / "latest.json").read_text())
    path = folder / meta["weights"]
    if path.suffix == ".npz":
        import numpy as np

        with np.load(path) as arrays:
            return sorted((name, arrays[name]) for name in arrays.files)
    return read_weights(path)
