"""Exact resume through run.py: a job killed with SIGKILL in the middle of an epoch and rerun
ends with the weights of a job that ran through, in one MLflow run without a duplicated or a
missing step.

Four processes in all: the uninterrupted job (one for the test run, test_signals compares with
it too), the killed one, its rerun, and a resume from another run directory (which also holds
a TensorBoard log ahead of the backup). The job is as small as the behaviour allows: 2 steps an
epoch, 2 epochs, the kill after step 3 (mid-epoch 2), step functions run eagerly (tracing is not
what these tests are about; both sides of every comparison run the same way)."""

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
from typing import Any

import numpy as np
import pytest

from callbacks.backup import Backup
from callbacks.base import TrainkitCallback
from tests import preloaded
from trainkit import signals

ROOT = Path(__file__).resolve().parents[1]

# Jobs in subprocesses, two or three a test (the shared uninterrupted one included): minutes on
# a loaded 2-core machine, beyond the suite's default timeout.
pytestmark = pytest.mark.timeout(900)

# 32 training images in batches of 16: 2 steps an epoch, 4 in all; a backup at step 3 (the
# middle of epoch 2) besides those at the epoch ends.
EPOCH_STEPS, STEPS = 2, 4
JOB = [
    "model=alexnet",
    "model.options.fc_units=256",  # the job is the subject, not the model: see tests/conftest.py
    "data.image_size=67",
    "data.limit=32",
    "trainer.batch_size=16",
    "trainer.epochs=2",
    "trainer.precision=float32",
    "trainer.deterministic=true",
    "trainer.seed=3",
    "trainer.run_eagerly=true",
    "callbacks=full",
    "callbacks.backup.save_every_n_steps=3",
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
    return preloaded.Popen(
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


class Hold(TrainkitCallback):
    """Test helper: before training batch ``batch`` of epoch ``epoch`` (0-based) the job writes
    ``<run_dir>/held`` and waits for a signal from outside: a SIGKILL ends it there, a SIGTERM
    or SIGINT (recorded by :mod:`trainkit.signals`) lets the batch run and the job stop after
    it. So a test signals the job at a known step however loaded the machine is. Once per run
    directory: a rerun with the same command does not wait."""

    def __init__(self, epoch: int = 0, batch: int = 0, timeout: float = 240) -> None:
        super().__init__()
        self.epoch, self.batch, self.timeout = epoch, batch, timeout
        self._epoch: int | None = None

    def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
        self._epoch = epoch

    def on_train_batch_begin(self, batch: int, logs: Any = None) -> None:
        marker = self.run_dir / "held"
        if (self._epoch, batch) != (self.epoch, self.batch) or marker.exists():
            return
        for backup in self.context.find_all(Backup) if self.context is not None else []:
            backup.wait()  # held after the last save's commit, which its writer thread makes
        marker.write_text(f"{self.epoch} {self.batch}")
        deadline = time.monotonic() + self.timeout
        while signals.requested() is None:
            if time.monotonic() > deadline:
                raise RuntimeError("Hold: no signal came")
            time.sleep(0.02)


def hold_at(epoch: int, batch: int) -> tuple[str, ...]:
    """The overrides that add :class:`Hold` to a job."""
    return (
        "+callbacks.hold._target_=tests.test_resume.Hold",
        f"+callbacks.hold.epoch={epoch}",
        f"+callbacks.hold.batch={batch}",
    )


def wait_until_held(process: subprocess.Popen, run_dir: Path) -> None:
    """Poll until the job waits in :class:`Hold` (cheap: the job itself does the timing)."""
    deadline = time.monotonic() + 280
    while not (run_dir / "held").exists():
        if process.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"the job never held: {process.communicate()}")
        time.sleep(0.05)


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
    """The uninterrupted JOB, run once for the whole test run (see :func:`shared_uninterrupted`)
    in ``<folder>/whole``. The process that starts it (the owner) writes its exit status to
    ``<folder>/returncode`` once it ended; :meth:`done` waits for that file, so a process that
    did not start the job (another xdist worker) waits for it the same way."""

    def __init__(self, folder: Path, owner: bool) -> None:
        self.folder = folder
        self.run_dir = folder / "whole"
        self.process: subprocess.Popen | None = None
        if owner:
            env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="2")
            with (folder / "stdout").open("w") as out, (folder / "stderr").open("w") as err:
                self.process = preloaded.Popen(
                    command(self.run_dir), cwd=ROOT, env=env, stdout=out, stderr=err
                )

    def finish(self, timeout: float = 600) -> None:
        """The owner: wait for the job (killed after ``timeout`` s) and record its status."""
        if self.process is None or (self.folder / "returncode").exists():
            return
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        (self.folder / "returncode.tmp").write_text(str(code))
        (self.folder / "returncode.tmp").rename(self.folder / "returncode")

    def done(self) -> Path:
        self.finish()
        status, deadline = self.folder / "returncode", time.monotonic() + 600
        while not status.exists():
            assert time.monotonic() < deadline, "the uninterrupted job did not end"
            time.sleep(0.2)
        assert status.read_text() == "0", (self.folder / "stderr").read_text()[-3000:]
        return self.run_dir


_shared: dict[str, Job] = {}


def shared_uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> Job:
    """JOB run through once in the test run, started when a test first asks for it (so it
    trains while that test's interrupted job does), shared by every test comparing with it:
    test_signals' and test_resume's, in one process or in two xdist workers (``--dist
    loadfile`` may give the files to different workers: the first to ask starts the job in
    the run's shared temporary folder, the other waits for it there)."""
    if "whole" not in _shared:
        run_uid = os.environ.get("PYTEST_XDIST_TESTRUNUID")
        if run_uid is None:
            folder, owner = tmp_path_factory.mktemp("uninterrupted"), True
        else:  # the workers' base folders are siblings: their parent is the run's
            folder = tmp_path_factory.getbasetemp().parent / f"uninterrupted-{run_uid}"
            folder.mkdir(exist_ok=True)
            try:
                os.close(os.open(folder / "owner", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
                owner = True
            except FileExistsError:
                owner = False
        _shared["whole"] = Job(folder, owner)
    return _shared["whole"]


def uninterrupted_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Job]:
    """The session fixtures' body: at the end the owner still lets the job finish, as
    another worker may be waiting for it."""
    job = shared_uninterrupted(tmp_path_factory)
    yield job
    job.finish()


@pytest.fixture(scope="session")
def uninterrupted(tmp_path_factory) -> Iterator[Job]:
    yield from uninterrupted_fixture(tmp_path_factory)


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
    assert steps["loss"] == list(range(1, STEPS + 1))
    assert steps["val_loss"] == [EPOCH_STEPS, STEPS]
    return run_id


@pytest.fixture(scope="module")
def killed(tmp_path_factory) -> tuple[Path, Path]:
    """JOB killed with SIGKILL in the middle of epoch 2 (after the backup at step 3, before
    step 4): its run directory, and a copy of what it left (run directory, and the store
    beside it)."""
    cut = tmp_path_factory.mktemp("sigkill") / "cut"
    process = start(cut, *hold_at(1, 1))
    wait_until_held(process, cut)
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=30) == -signal.SIGKILL
    meta = json.loads((cut / "backup" / "latest.json").read_text())
    assert (meta["epoch"], meta["step"], meta["global_step"]) == (1, 1, 3), meta
    copy = tmp_path_factory.mktemp("sigkill-copy") / "cut"
    shutil.copytree(cut, copy)
    shutil.copy(cut.parent / "cut.db", copy.parent / "cut.db")
    return cut, copy


@pytest.fixture(scope="module")
def killed_and_rerun(killed: tuple[Path, Path], uninterrupted: Job):
    """The killed JOB run again with the same command: (its run dir, the uninterrupted one's,
    the rerun's result)."""
    cut = killed[0]
    resumed = run(cut, *hold_at(1, 1))
    assert resumed.returncode == 0, resumed.stderr
    return cut, uninterrupted.done(), resumed


@pytest.mark.slow
def test_sigkill_mid_epoch_then_rerun_equals_an_uninterrupted_job(killed_and_rerun):
    cut, whole, resumed = killed_and_rerun
    assert "resuming at epoch 2, step 1" in resumed.stdout
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
    assert steps == list(range(1, STEPS + 1))


@pytest.mark.slow
def test_resume_from_another_run_directory_continues_its_mlflow_run_and_its_log(
    killed, uninterrupted
):
    """``trainer.resume=PATH`` from a fresh run directory: the backup's MLflow run goes on (no
    second run), the weights are the uninterrupted job's. That directory also holds a
    TensorBoard log ahead of the backup, as a job killed after TensorBoard wrote an epoch and
    before the backup committed it leaves one: here the uninterrupted job's log (steps 1-4,
    epochs 0-1) with the killed job's backup (step 3); the rerun redoes step 4 and epoch 1 and
    writes no step twice."""
    source = killed[1]  # the killed job's copy: killed_and_rerun reruns the job itself
    db = source.parent / "cut.db"
    elsewhere = source.parent / "elsewhere"
    whole = uninterrupted.done()
    shutil.copytree(whole / "tensorboard", elsewhere / "tensorboard")
    result = run(elsewhere, f"trainer.resume={source}", db=db)
    assert result.returncode == 0, result.stderr
    assert "resuming at epoch 2, step 1" in result.stdout

    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{db}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert len(runs) == 1  # the backup's run went on, no second one
    assert same_histories(elsewhere, whole, db) == runs[0].info.run_id
    same_weights(whole, elsewhere)

    logged, expected = event_steps(elsewhere), event_steps(whole)
    for folder in ("train", "validation"):
        pairs = logged[folder]
        assert len(pairs) == len(set(pairs)), f"{folder}: a step written twice"
        assert sorted(pairs) == sorted(expected[folder]), folder
