"""Graceful stops through run.py: SIGTERM in the middle of an epoch finishes the step, writes a
backup, ends the MLflow run KILLED and exits 143; the rerun resumes the same run. A loss that
turns NaN ends the run FAILED with the reason."""

from __future__ import annotations

import json
import signal
import time

import pytest

from tests.test_resume import histories, run, start


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
    assert meta["epoch"] == 1 and 1 <= meta["step"] < 4 and not meta["finished"], meta
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
