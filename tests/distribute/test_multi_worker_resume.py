"""Issue 8: a two-worker job on 127.0.0.1 where one worker is killed, then both are restarted,
resumes from the workers' backups and ends with the weights of an uninterrupted two-worker job."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from tests.distribute.helpers import (
    TINY,
    Started,
    backup_weights,
    free_ports,
    job_env,
    start_job,
    tf_config,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

# 64 digits in global batches of 16: 4 steps an epoch, 8 in all; a backup every 2 steps.
JOB = [
    *TINY,
    "data.limit=64",
    "trainer.epochs=2",
    "trainer.deterministic=true",
    "trainer.seed=3",
    "trainer.strategy=multi_worker",
    "trainer.cluster_timeout=120",
    "callbacks=none",
    "+callbacks/entry@callbacks.backup=backup",
    "callbacks.backup.save_every_n_steps=2",
    "callbacks.backup.delete_on_success=false",  # the test reads each worker's final backup
]


def start_workers(tmp: Path, run_dir: Path, name: str) -> list[Started]:
    ports = free_ports(2)
    return [
        start_job(
            tmp,
            [*JOB, f"hydra.run.dir={run_dir}"],
            name=f"{name}-worker{i}",
            env=job_env(TF_CONFIG=tf_config(ports, i)),
        )
        for i in range(2)
    ]


def folders(run_dir: Path) -> list[Path]:
    """Each worker's backup folder: the chief's, then worker 1's."""
    return [run_dir / "backup", run_dir / "backup" / "worker-1"]


def global_step(folder: Path) -> int:
    try:
        return int(json.loads((folder / "latest.json").read_text())["global_step"])
    except (OSError, ValueError, KeyError):
        return -1


def model_weights(folder: Path) -> list[tuple[str, np.ndarray]]:
    return [(name, a) for name, a in backup_weights(folder) if name.startswith("model")]


def test_kill_one_worker_restart_both_and_they_end_as_an_uninterrupted_job(tmp_path):
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    uninterrupted = start_workers(tmp_path, whole, "whole")
    interrupted = start_workers(tmp_path, cut, "cut")

    # Kill worker 1 once both workers have backed up step 6 (epoch 2, 2 steps in).
    deadline = time.monotonic() + 300
    while min(global_step(folder) for folder in folders(cut)) < 6:
        assert time.monotonic() < deadline, interrupted[1].log.read_text()[-3000:]
        assert all(w.process.poll() is None for w in interrupted), "a worker ended early"
        time.sleep(0.02)
    interrupted[1].process.kill()
    # Its peer cannot go on alone: the cluster manager stops it too before restarting both.
    code, _, _ = interrupted[0].wait(30)
    interrupted[1].wait(10)
    assert [global_step(folder) for folder in folders(cut)] == [6, 6]

    restarted = start_workers(tmp_path, cut, "restarted")
    for worker in restarted:
        code, out, seconds = worker.wait(300)
        assert code == 0, out[-4000:]
        assert "resuming at epoch 2, step 2" in out
    for worker in uninterrupted:
        code, out, _ = worker.wait(300)
        assert code == 0, out[-4000:]
    print(f"restarted two-worker job: {seconds:.1f} s wall")

    for mine, expected in zip(folders(cut), folders(whole), strict=True):
        assert json.loads((mine / "latest.json").read_text())["finished"]
        got, want = model_weights(mine), model_weights(expected)
        assert [name for name, _ in got] == [name for name, _ in want]
        for (name, a), (_, b) in zip(got, want, strict=True):
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-6, err_msg=f"{mine}: {name}")
