"""Exact resume through run.py: a job killed with SIGKILL in the middle of an epoch and rerun
ends with the weights of a job that ran through, in one MLflow run without a duplicated or a
missing step."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]

# Jobs in subprocesses, two or three a test (the shared uninterrupted one included): minutes on
# a loaded 2-core machine, beyond the suite's default timeout.
pytestmark = pytest.mark.timeout(900)

# 64 training images in batches of 16: 4 steps an epoch, 8 in all; a backup every 2 steps.
JOB = [
    "model=alexnet",
    "data.image_size=67",
    "data.limit=64",
    "trainer.batch_size=16",
    "trainer.epochs=2",
    "trainer.precision=float32",
    "trainer.deterministic=true",
    "trainer.seed=3",
    "callbacks=full",
    "callbacks.backup.save_every_n_steps=2",
    "callbacks.backup.delete_on_success=false",  # final_weights reads the finished backup
    # the best weights of epochs before a resume are not in memory: compare the trained ones
    "callbacks.early_stopping.restore_best_weights=false",
    "~callbacks.hook_profiler",
    "tracking.log_model=false",
    "callbacks.tensorboard.histogram_freq=0",
]


def command(run_dir: Path, *extra: str, db: Path | None = None) -> list[str]:
    store = f"sqlite:///{db or run_dir.parent / (run_dir.name + '.db')}"
    return [
        sys.executable,
        "run.py",
        *JOB,
        f"hydra.run.dir={run_dir}",
        f"tracking.uri={store}",
        *extra,
    ]


def start(run_dir: Path, *extra: str, db: Path | None = None) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.Popen(
        command(run_dir, *extra, db=db),
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run(run_dir: Path, *extra: str, db: Path | None = None) -> subprocess.CompletedProcess:
    process = start(run_dir, *extra, db=db)
    out, err = process.communicate(timeout=300)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def wait_for_backup(process: subprocess.Popen, run_dir: Path, global_step: int) -> dict:
    """Poll until the backup is at ``global_step`` or later; returns its latest.json."""
    pointer = run_dir / "backup" / "latest.json"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        if pointer.exists():
            meta = json.loads(pointer.read_text())
            if meta["global_step"] >= global_step:
                return meta
        time.sleep(0.02)
    raise AssertionError(f"no backup at step {global_step}: {process.communicate()}")


def final_weights(run_dir: Path) -> list[np.ndarray]:
    meta = json.loads((run_dir / "backup" / "latest.json").read_text())
    assert meta["finished"]
    with np.load(run_dir / "backup" / meta["weights"]) as arrays:
        count = int(arrays["model_count"])
        return [arrays[f"model{i}"] for i in range(count)]


def histories(run_dir: Path, db: Path | None = None) -> tuple[str, dict[str, list[int]], str]:
    """(run id, steps logged per key, status) of the MLflow run of ``run_dir`` (its store is
    ``<run_dir>.db`` unless ``db`` says otherwise)."""
    from mlflow.tracking import MlflowClient

    db = db or run_dir.parent / (run_dir.name + ".db")
    client = MlflowClient(f"sqlite:///{db}")
    run_id = (run_dir / "mlflow_run_id").read_text().strip()
    run = client.get_run(run_id)
    steps = {
        key: [m.step for m in client.get_metric_history(run_id, key)] for key in run.data.metrics
    }
    return run_id, steps, run.info.status


class Job:
    """A job started in the background; :meth:`done` waits for it once and returns its dir."""

    def __init__(self, run_dir: Path, *extra: str) -> None:
        self.run_dir = run_dir
        self.process = start(run_dir, *extra)
        self.result: subprocess.CompletedProcess | None = None

    def done(self) -> Path:
        if self.result is None:
            out, err = self.process.communicate(timeout=300)
            self.result = subprocess.CompletedProcess(self.process.args, self.process.returncode)
            self.result.stdout, self.result.stderr = out, err
        assert self.result.returncode == 0, self.result.stderr
        return self.run_dir


_shared: dict[str, Job] = {}


def shared_uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> Job:
    """JOB run through once in the session, started when a test first asks for it (so it
    trains while that test's interrupted job does), shared by every test comparing with it."""
    if "whole" not in _shared:
        _shared["whole"] = Job(tmp_path_factory.mktemp("uninterrupted") / "whole")
    return _shared["whole"]


@pytest.fixture(scope="session")
def uninterrupted(tmp_path_factory) -> Iterator[Job]:
    job = shared_uninterrupted(tmp_path_factory)
    yield job
    if job.process.poll() is None:
        job.process.kill()
        job.process.wait()


def same_weights(a: Path, b: Path) -> None:
    for x, y in zip(final_weights(a), final_weights(b), strict=True):
        np.testing.assert_allclose(x, y, rtol=0, atol=1e-6)


def same_histories(cut: Path, whole: Path, db: Path | None = None) -> str:
    """One run, FINISHED, whose every key has the steps of the uninterrupted run's, none twice,
    none missing; returns the run id."""
    run_id, steps, status = histories(cut, db)
    _, expected, _ = histories(whole)
    assert status == "FINISHED"
    assert steps.keys() == expected.keys()
    for key, logged in steps.items():
        assert logged == expected[key], key
    assert steps["loss"] == list(range(1, 9))
    assert steps["val_loss"] == [4, 8]
    return run_id


@pytest.fixture(scope="module")
def killed(tmp_path_factory) -> tuple[Path, Path]:
    """JOB killed with SIGKILL in the middle of epoch 2 (after the backup at step 6): its run
    directory, and a copy of what it left (run directory, and the store beside it)."""
    cut = tmp_path_factory.mktemp("sigkill") / "cut"
    process = start(cut)
    meta = wait_for_backup(process, cut, 6)  # epoch 2 (0-based 1), 2 steps in
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert (meta["epoch"], meta["step"]) == (1, 2), meta
    copy = tmp_path_factory.mktemp("sigkill-copy") / "cut"
    shutil.copytree(cut, copy)
    shutil.copy(cut.parent / "cut.db", copy.parent / "cut.db")
    return cut, copy


@pytest.fixture(scope="module")
def killed_and_rerun(killed: tuple[Path, Path], uninterrupted: Job):
    """The killed JOB run again with the same command: (its run dir, the uninterrupted one's,
    the rerun's result)."""
    cut = killed[0]
    resumed = run(cut)
    assert resumed.returncode == 0, resumed.stderr
    return cut, uninterrupted.done(), resumed


@pytest.mark.slow
def test_sigkill_mid_epoch_then_rerun_equals_an_uninterrupted_job(killed_and_rerun):
    cut, whole, resumed = killed_and_rerun
    assert "resuming at epoch 2, step 2" in resumed.stdout
    same_weights(whole, cut)
    run_id = same_histories(cut, whole)
    # the resumed epoch's training accuracy is no better than the uninterrupted one's: a model
    # that replayed epoch 1's (dropout mask, batch) pairs would score far higher (issue 9)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{cut.parent / 'cut.db'}")
    acc = [m.value for m in client.get_metric_history(run_id, "accuracy")]
    client_whole = MlflowClient(f"sqlite:///{whole.parent / 'whole.db'}")
    whole_id = (whole / "mlflow_run_id").read_text().strip()
    acc_whole = [m.value for m in client_whole.get_metric_history(whole_id, "accuracy")]
    assert acc == pytest.approx(acc_whole, abs=1e-6)


def event_steps(run_dir: Path) -> dict[str, list[tuple[str, int]]]:
    """Every (tag, step) of every summary in the TensorBoard event files of a run, per folder
    (train, validation, test, the root), read raw: EventAccumulator would hide a duplicate by
    purging what a restart appears to orphan."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    found: dict[str, list[tuple[str, int]]] = {}
    root = run_dir / "tensorboard"
    for path in sorted(root.rglob("events.out.tfevents.*"), key=lambda p: p.name.split(".")[3]):
        folder = str(path.parent.relative_to(root))
        for event in EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                found.setdefault(folder, []).append((value.tag, int(event.step)))
    return found


@pytest.mark.slow
def test_tensorboard_after_a_sigkill_and_rerun_has_every_step_once(killed_and_rerun):
    cut, whole, _ = killed_and_rerun
    logged, expected = event_steps(cut), event_steps(whole)
    assert sorted(logged) == sorted(expected)
    for folder, pairs in logged.items():
        assert len(pairs) == len(set(pairs)), f"{folder}: a step written twice"
        assert sorted(pairs) == sorted(expected[folder]), folder
    steps = sorted(step for tag, step in logged["train"] if tag == "batch_loss")
    assert steps == list(range(1, 9))


@pytest.mark.slow
def test_resume_from_another_run_directory_continues_its_mlflow_run(killed, uninterrupted):
    source = killed[1]  # the killed job's copy: killed_and_rerun reruns the job itself
    db = source.parent / "cut.db"
    elsewhere = source.parent / "elsewhere"
    result = run(elsewhere, f"trainer.resume={source}", db=db)
    assert result.returncode == 0, result.stderr
    assert "resuming at epoch 2, step 2" in result.stdout

    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{db}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert len(runs) == 1  # the backup's run went on, no second one
    whole = uninterrupted.done()
    assert same_histories(elsewhere, whole, db) == runs[0].info.run_id
    same_weights(whole, elsewhere)


@pytest.mark.slow
def test_tensorboard_log_ahead_of_the_backup_gets_no_step_twice(killed, uninterrupted, tmp_path):
    # A job killed after TensorBoard wrote an epoch and before the backup committed it leaves
    # a log ahead of its backup. Here: the uninterrupted job's log (steps 1-8, epochs 0-1) and
    # the killed job's backup (step 6): the rerun redoes steps 7-8 and epoch 1.
    whole = uninterrupted.done()
    ahead = tmp_path / "ahead"
    shutil.copytree(whole / "tensorboard", ahead / "tensorboard")
    result = run(ahead, f"trainer.resume={killed[1]}")
    assert result.returncode == 0, result.stderr
    assert "resuming at epoch 2, step 2" in result.stdout
    logged, expected = event_steps(ahead), event_steps(whole)
    for folder in ("train", "validation"):
        pairs = logged[folder]
        assert len(pairs) == len(set(pairs)), f"{folder}: a step written twice"
        assert sorted(pairs) == sorted(expected[folder]), folder
