"""Graceful stops through run.py: SIGTERM in the middle of an epoch finishes the step, writes a
backup, ends the MLflow run KILLED and exits 143; the rerun resumes the same run. The same for a
signal during validation and during the evaluation after training. A loss that turns NaN ends
the run FAILED with the reason."""

from __future__ import annotations

import json
import os
import signal
import time
from typing import Any

import pytest

from callbacks.base import TrainkitCallback
from tests.test_resume import (
    Job,
    histories,
    run,
    same_histories,
    same_weights,
    shared_uninterrupted,
    start,
)

# Jobs in subprocesses, one to three a test: minutes on a loaded 2-core machine, beyond the
# suite's default timeout.
pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="session")
def uninterrupted(tmp_path_factory) -> Job:
    return shared_uninterrupted(tmp_path_factory)


class Interrupt(TrainkitCallback):
    """Test helper: the job sends itself a signal, as a cluster or a user's Ctrl-C would, at the
    start of the first validation batch of epoch ``validation_epoch`` (0-based) and at the start
    of the first batch of the evaluation after training; each once per run directory."""

    def __init__(
        self, validation_epoch: int = 0, in_validation: str = "SIGTERM", in_test: str = "SIGINT"
    ) -> None:
        super().__init__()
        self.validation_epoch = validation_epoch
        self.in_validation = in_validation
        self.in_test = in_test
        self._epoch: int | None = None
        self._in_fit = False

    def on_train_begin(self, logs: Any = None) -> None:
        self._in_fit = True

    def on_train_end(self, logs: Any = None) -> None:
        self._in_fit = False

    def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
        self._epoch = epoch

    def on_test_batch_begin(self, batch: int, logs: Any = None) -> None:
        if batch != 0:
            return
        if not self._in_fit:
            self._send("test", self.in_test)
        elif self._epoch == self.validation_epoch:
            self._send("validation", self.in_validation)

    def _send(self, where: str, name: str) -> None:
        marker = self.run_dir / f"interrupted-in-{where}"
        if not marker.exists():
            marker.write_text(name)
            os.kill(os.getpid(), getattr(signal, name))


@pytest.mark.slow
def test_sigterm_mid_epoch_backs_up_exits_143_and_the_rerun_resumes_the_run(tmp_path):
    run_dir = tmp_path / "job"
    job = start(run_dir, "callbacks.backup.save_every_n_steps=1")
    pointer = run_dir / "backup" / "latest.json"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and job.poll() is None:
        if pointer.exists() and json.loads(pointer.read_text())["global_step"] >= 5:
            break
        time.sleep(0.02)
    job.send_signal(signal.SIGTERM)
    out, err = job.communicate(timeout=120)
    assert job.returncode == 143, err
    lines = [line for line in err.splitlines() if line.startswith("interrupted")]
    assert len(lines) == 1 and "SIGTERM" in lines[0] and "Traceback" not in err
    meta = json.loads(pointer.read_text())
    # (step 4: the signal landed in the last validation, after every step of the epoch)
    assert meta["epoch"] == 1 and 1 <= meta["step"] <= 4 and not meta["finished"], meta
    run_id, steps, status = histories(run_dir)
    assert status == "KILLED"
    assert steps["loss"] == list(range(1, 4 + meta["step"] + 1))

    again = run(run_dir)
    assert again.returncode == 0, again.stderr
    assert f"resuming at epoch 2, step {meta['step']}" in again.stdout
    resumed_id, steps, status = histories(run_dir)
    assert (resumed_id, status) == (run_id, "FINISHED")
    assert steps["loss"] == list(range(1, 9))
    assert steps["val_loss"] == [4, 8]


@pytest.mark.slow
def test_a_nan_loss_fails_the_run_with_the_reason(tmp_path):
    from mlflow.tracking import MlflowClient

    run_dir = tmp_path / "nan"
    result = run(run_dir, "optimizer.learning_rate=1e12", "trainer.epochs=1")
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "not finite" in lines[0] and "Traceback" not in result.stderr
    run_id, _, status = histories(run_dir)
    assert status == "FAILED"
    client = MlflowClient(f"sqlite:///{tmp_path / 'nan.db'}")
    assert client.get_run(run_id).data.tags["trainkit.stop_reason"] == "non_finite"


@pytest.mark.slow
def test_signals_during_validation_and_evaluation_back_up_and_resume_exactly(
    tmp_path, uninterrupted
):
    run_dir = tmp_path / "job"
    command = ("+callbacks.interrupt._target_=tests.test_signals.Interrupt",)

    # SIGTERM during epoch 1's validation: every training step of the epoch is done
    stopped = run(run_dir, *command)
    assert stopped.returncode == 143, stopped.stderr
    assert "interrupted" in stopped.stderr and "Traceback" not in stopped.stderr
    meta = json.loads((run_dir / "backup" / "latest.json").read_text())
    assert (meta["epoch"], meta["step"], meta["finished"]) == (0, 4, False), meta
    run_id, steps, status = histories(run_dir)
    assert status == "KILLED"
    assert steps["loss"] == [1, 2, 3, 4] and "val_loss" not in steps

    # the rerun validates epoch 1 again, ends it, trains epoch 2; Ctrl-C during the test
    # evaluation: the backup holds the finished training
    stopped = run(run_dir, *command)
    assert stopped.returncode == 130, stopped.stderr
    assert "resuming at epoch 1, step 4" in stopped.stdout
    assert "Traceback" not in stopped.stderr
    meta = json.loads((run_dir / "backup" / "latest.json").read_text())
    assert meta["finished"] and not meta["stopped_early"], meta
    _, steps, status = histories(run_dir)
    assert status == "KILLED"
    assert steps["val_loss"] == [4, 8] and not any(key.startswith("test_") for key in steps)

    # the last rerun trains nothing more and evaluates
    done = run(run_dir, *command)
    assert done.returncode == 0, done.stderr
    whole = uninterrupted.done()
    same_weights(whole, run_dir)
    assert same_histories(run_dir, whole) == run_id
