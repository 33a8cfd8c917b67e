"""The job in-process on composed configs: what it returns, leaves behind and refuses.

The jobs that train run their steps eagerly (``trainer.run_eagerly=true``): graph tracing is not
what these tests are about, and it costs seconds a job."""

from __future__ import annotations

import json

import keras
import pytest

from tests.conftest import TINY, compose_config
from trainkit import job

EAGER = "trainer.run_eagerly=true"


def run(tmp_path, overrides, capsys=None):
    cfg = compose_config(
        [*TINY, f"tracking.uri=sqlite:///{tmp_path}/mlflow.db", *overrides],
        run_dir=tmp_path / "run",
    )
    return job.main(cfg)


@pytest.mark.slow
def test_minimal_stack_trains_evaluates_predicts_and_returns_the_optimized_metric(tmp_path, capsys):
    """One job for two questions: the minimal stack runs every phase and tells where to look,
    and the job returns the optimized metric's best epoch (here ``val_loss``: the lowest)."""
    from mlflow import MlflowClient

    hook_logger = "+callbacks.hook_logger._target_=callbacks.hook_logger.HookLogger"
    value = run(
        tmp_path,
        ["callbacks=minimal", hook_logger, "trainer.epochs=2", "optimized_metric=val_loss", EAGER],
    )
    run_dir = tmp_path / "run"
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    run_id = (run_dir / "mlflow_run_id").read_text().strip()
    val_loss = [m.value for m in client.get_metric_history(run_id, "val_loss")]
    assert len(val_loss) == 2 and value > 0  # a loss, the best (lowest) epoch's
    assert value == pytest.approx(min(val_loss))
    assert json.loads((run_dir / "class_names.json").read_text()) == [str(i) for i in range(10)]
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    phases = {e["phase"] for e in events}
    assert phases == {"setup", "train", "validation", "test", "predict"}
    assert sum(e["hook"] == "on_epoch_end" for e in events) == 2
    out = capsys.readouterr().out
    assert "test: accuracy=" in out and f"run directory: {run_dir}" in out
    assert f"mlflow ui --backend-store-uri sqlite:///{tmp_path}/mlflow.db" in out


def user_error(tmp_path, overrides, capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        run(tmp_path, overrides)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_input_too_small_is_one_line(tmp_path, capsys):
    err = user_error(tmp_path, ["data.image_size=32"], capsys)
    assert err == (
        "error: model 'alexnet' needs an input of at least 67x67 pixels, got 32x32: "
        "set data.image_size=67 or larger (or null for the native size)"
    )


def test_missing_data_folder_is_one_line(tmp_path, capsys):
    err = user_error(tmp_path, ["data=folder", f"data.path={tmp_path}/missing"], capsys)
    assert err.startswith(f"error: data folder not found: {tmp_path}/missing")


def test_bad_callback_target_is_one_line(tmp_path, capsys):
    err = user_error(tmp_path, ["callbacks=none", "+callbacks.x._target_=nowhere.Nothing"], capsys)
    assert err.startswith("error: callbacks.x._target_=nowhere.Nothing cannot be imported:")


def test_unknown_task(tmp_path, capsys):
    assert "unknown task 'fly'" in user_error(tmp_path, ["task=fly"], capsys)


class InterruptAtSecondEpoch(keras.callbacks.Callback):
    """A user's Ctrl-C during the second epoch."""

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 1:
            raise KeyboardInterrupt


@pytest.mark.slow
def test_ctrl_c_ends_the_run_killed_and_keeps_checkpoints(tmp_path, capsys):
    from mlflow import MlflowClient

    with pytest.raises(SystemExit) as exit_info:
        run(
            tmp_path,
            [
                "callbacks=default",
                "~callbacks.tensorboard",
                "trainer.epochs=2",
                EAGER,
                "+callbacks.interrupt._target_=tests.test_job.InterruptAtSecondEpoch",
            ],
        )
    assert exit_info.value.code == 130
    assert "interrupted: the MLflow run ended KILLED" in capsys.readouterr().err
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    (mlflow_run,) = client.search_runs([client.get_experiment_by_name("trainkit").experiment_id])
    assert mlflow_run.info.status == "KILLED"
    assert [m.step for m in client.get_metric_history(mlflow_run.info.run_id, "val_loss")] == [3]
    assert (tmp_path / "run" / "checkpoints" / "last.keras").is_file()
