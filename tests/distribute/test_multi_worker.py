"""trainer.strategy=multi_worker: two workers on 127.0.0.1, a lone worker, and the Keras patch."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from tests.distribute.helpers import (
    ROOT,
    TINY,
    backup_weights,
    events,
    free_ports,
    job_env,
    mlflow_runs,
    start_job,
    tf_config,
)

# Subprocess jobs with their own kill timeouts; on a loaded machine they take minutes.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

PROBE = Path(__file__).with_name("keras_patch_probe.py")


def _two_workers(tmp: Path, overrides: list[str], timeout: float = 240):
    ports = free_ports(2)
    workers = [
        start_job(tmp, overrides, name=f"worker{i}", env=job_env(TF_CONFIG=tf_config(ports, i)))
        for i in range(2)
    ]
    return [worker.wait(timeout) for worker in workers]


def test_two_workers_train_alike_and_only_the_chief_writes(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    overrides = [
        *TINY,
        "callbacks=full",
        "callbacks.hook_profiler.print_table=false",
        "callbacks.backup.delete_on_success=false",  # each worker's final backup is compared
        "trainer.strategy=multi_worker",
        "trainer.cluster_timeout=120",
        f"hydra.run.dir={run_dir}",  # one folder for the job, as on a shared file system
    ]
    results = _two_workers(tmp_path, overrides)
    for code, out, _ in results:
        assert code == 0, out[-4000:]
    print(f"two-worker job: {max(seconds for _, _, seconds in results):.1f} s wall")
    assert "worker 0 of 2, 2 replica(s) in sync" in results[0][1]
    assert "worker 1 of 2, 2 replica(s) in sync" in results[1][1]

    # Both end with the same weights: each kept its own backup of the final state.
    chief, other = backup_weights(run_dir / "backup"), backup_weights(run_dir / "backup/worker-1")
    assert [name for name, _ in chief] == [name for name, _ in other]
    for (name, a), (_, b) in zip(chief, other, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7, err_msg=name)

    # Only the chief wrote: one MLflow run, one TensorBoard log, one event stream.
    runs = mlflow_runs(tmp_path / "mlflow.db")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    train_logs = list((run_dir / "tensorboard" / "train").glob("events.out.tfevents.*"))
    # events.out.tfevents.<time>.<host>.<pid>.<n>.<suffix>: one writing process
    assert len({path.name.rsplit(".", 3)[1] for path in train_logs}) == 1
    hooks = [e["hook"] for e in events(run_dir)]
    assert hooks.count("on_train_begin") == 1
    assert len(list((run_dir / "checkpoints").glob("last.keras"))) == 1


def test_a_lone_worker_gives_up_after_the_cluster_timeout(tmp_path: Path) -> None:
    ports = free_ports(2)
    job = start_job(
        tmp_path,
        [*TINY, "trainer.strategy=multi_worker", "trainer.cluster_timeout=3"],
        env=job_env(TF_CONFIG=tf_config(ports, 0)),
    )
    code, out, _ = job.wait(120)
    assert code == 2, out[-3000:]
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert errors == [
        "error: multi-worker peers did not come up within trainer.cluster_timeout=3s: "
        f"127.0.0.1:{ports[1]} (start every worker of TF_CONFIG, or raise the timeout)"
    ]
    assert "Traceback" not in out


def _probe(tmp: Path, mode: str) -> list[tuple[int, str]]:
    import subprocess

    ports = ",".join(map(str, free_ports(2)))
    processes = []
    for index in range(2):
        log = (tmp / f"{mode}-{index}.out").open("wb")
        processes.append(
            (
                subprocess.Popen(
                    [sys.executable, str(PROBE), str(index), ports, mode],
                    cwd=ROOT,
                    env=job_env(),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                ),
                tmp / f"{mode}-{index}.out",
            )
        )
    done = []
    for process, path in processes:
        try:
            process.wait(120)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        done.append((process.returncode, path.read_text(errors="replace")))
    return done


def test_keras_fails_under_multi_worker_without_the_patch(tmp_path: Path) -> None:
    unpatched = _probe(tmp_path, "unpatched")
    assert all(code != 0 for code, _ in unpatched)
    # keras-team/keras#20585: the symbolic build converts a PerReplica batch. When this stops
    # failing, Keras has fixed it and trainkit.distribute.patch_keras_for_multi_worker can go.
    assert any("PerReplica" in out for _, out in unpatched), unpatched[0][1][-2000:]

    patched = _probe(tmp_path, "patched")
    for code, out in patched:
        assert code == 0, out[-3000:]
    weights = [out.split("weights:")[-1].strip() for _, out in patched]
    assert weights[0] == weights[1]
