"""Graceful stops through run.py: SIGTERM in the middle of an epoch finishes the step, writes a
backup, ends the MLflow run KILLED and exits 143; the rerun resumes the same run. The same for a
signal during validation and during the evaluation after training. A loss that turns NaN ends
the run FAILED with the reason.

The signals land on one job, stopped three times and run a fourth to its end, which then has
the weights and the MLflow history of the uninterrupted job (test_resume's, shared by the
session): five processes for what took eight. The NaN job runs in-process."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from typing import Any

import pytest

from callbacks.base import TrainkitCallback
from tests.conftest import TINY, compose_config
from tests.test_resume import (
    EPOCH_STEPS,
    STEPS,
    Job,
    histories,
    hold_at,
    run,
    same_histories,
    same_weights,
    start,
    uninterrupted_fixture,
    wait_until_held,
)

# Jobs in subprocesses, five in the chain's test: minutes on a loaded 2-core machine, beyond
# the suite's default timeout.
pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="session")
def uninterrupted(tmp_path_factory) -> Iterator[Job]:
    yield from uninterrupted_fixture(tmp_path_factory)


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


def interrupted_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("interrupted")]


@pytest.mark.slow
def test_signals_mid_epoch_in_validation_and_in_evaluation_back_up_and_resume_exactly(
    tmp_path, uninterrupted
):
    run_dir = tmp_path / "job"
    # The same command every time, as a user reruns it: it holds before the first step for the
    # SIGTERM from outside, and signals itself in epoch 1's validation and in the evaluation
    # (each once per run directory).
    command = (*hold_at(0, 0), "+callbacks.interrupt._target_=tests.test_signals.Interrupt")
    pointer = run_dir / "backup" / "latest.json"

    # SIGTERM from outside in the middle of epoch 1: step 1 finishes, is backed up, exit 143
    job = start(run_dir, *command)
    wait_until_held(job, run_dir)
    job.send_signal(signal.SIGTERM)
    out, err = job.communicate(timeout=120)
    assert job.returncode == 143, err
    lines = interrupted_lines(err)
    assert len(lines) == 1 and "SIGTERM" in lines[0] and "Traceback" not in err
    meta = json.loads(pointer.read_text())
    assert (meta["epoch"], meta["step"], meta["finished"]) == (0, 1, False), meta
    run_id, steps, status = histories(run_dir)
    assert status == "KILLED"
    assert steps["loss"] == [1] and "val_loss" not in steps

    # the rerun resumes at step 2; SIGTERM during epoch 1's validation: every training step of
    # the epoch is done
    stopped = run(run_dir, *command)
    assert stopped.returncode == 143, stopped.stderr
    assert "resuming at epoch 1, step 1" in stopped.stdout
    lines = interrupted_lines(stopped.stderr)
    assert len(lines) == 1 and "SIGTERM" in lines[0] and "Traceback" not in stopped.stderr
    meta = json.loads(pointer.read_text())
    assert (meta["epoch"], meta["step"], meta["finished"]) == (0, EPOCH_STEPS, False), meta
    assert histories(run_dir)[0] == run_id  # the same MLflow run went on
    _, steps, status = histories(run_dir)
    assert status == "KILLED"
    assert steps["loss"] == list(range(1, EPOCH_STEPS + 1)) and "val_loss" not in steps

    # the rerun validates epoch 1 again, ends it, trains epoch 2; Ctrl-C during the test
    # evaluation: the backup holds the finished training
    stopped = run(run_dir, *command)
    assert stopped.returncode == 130, stopped.stderr
    assert f"resuming at epoch 1, step {EPOCH_STEPS}" in stopped.stdout
    lines = interrupted_lines(stopped.stderr)
    assert len(lines) == 1 and "SIGINT" in lines[0] and "Traceback" not in stopped.stderr
    meta = json.loads(pointer.read_text())
    assert meta["finished"] and not meta["stopped_early"], meta
    _, steps, status = histories(run_dir)
    assert status == "KILLED"
    assert steps["loss"] == list(range(1, STEPS + 1))
    assert steps["val_loss"] == [EPOCH_STEPS, STEPS]
    assert not any(key.startswith("test_") for key in steps)

    # the last rerun trains nothing more and evaluates: the uninterrupted job's weights and
    # history, in the run the first start opened, FINISHED
    done = run(run_dir, *command)
    assert done.returncode == 0, done.stderr
    whole = uninterrupted.done()
    same_weights(whole, run_dir)
    assert same_histories(run_dir, whole) == run_id


@pytest.mark.slow
def test_a_nan_loss_fails_the_run_with_the_reason(tmp_path, capsys):
    """In-process (the exit status is SystemExit's code; the process boundary adds nothing that
    test_errors does not prove for every one-line error)."""
    from mlflow.tracking import MlflowClient

    from trainkit import job

    cfg = compose_config(
        [
            *TINY,
            "callbacks=default",  # nan_guard and the MLflow run, among the everyday stack
            "~callbacks.tensorboard",
            "optimizer.learning_rate=1e12",
            "trainer.run_eagerly=true",
            f"tracking.uri=sqlite:///{tmp_path / 'nan.db'}",
        ],
        run_dir=tmp_path / "nan",
    )
    with pytest.raises(SystemExit) as exit_info:
        job.main(cfg)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "not finite" in lines[0] and "Traceback" not in err
    client = MlflowClient(f"sqlite:///{tmp_path / 'nan.db'}")
    run = client.get_run((tmp_path / "nan" / "mlflow_run_id").read_text().strip())
    assert run.info.status == "FAILED"
    assert run.data.tags["trainkit.stop_reason"] == "non_finite"
