"""MLflowLogger against a real SQLite store and a real ``mlflow server``: what a run holds."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import keras
import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient

from callbacks.mlflow import MLflowLogger
from tests.tracking.helpers import SECRET, STEPS, make_context, run_job
from trainkit.tracking.store import global_tracking_uri
from trainkit.tracking.sweep import git_commit


def steps(client: MlflowClient, run_id: str, key: str) -> list[int]:
    return [m.step for m in client.get_metric_history(run_id, key)]


def values(client: MlflowClient, run_id: str, key: str) -> list[float]:
    return [m.value for m in client.get_metric_history(run_id, key)]


def artifacts(client: MlflowClient, run_id: str, path: str | None = None) -> set[str]:
    found = set()
    for item in client.list_artifacts(run_id, path):
        found |= artifacts(client, run_id, item.path) if item.is_dir else {item.path}
    return found


def test_training_metrics_are_logged_at_every_global_step(job) -> None:
    done, client, run = job
    run_id = run.info.run_id
    assert run.info.status == "FINISHED"
    assert steps(client, run_id, "loss") == list(range(1, 2 * STEPS + 1))
    assert steps(client, run_id, "accuracy") == list(range(1, 2 * STEPS + 1))
    assert steps(client, run_id, "lr") == list(range(1, 2 * STEPS + 1))
    assert values(client, run_id, "lr") == pytest.approx([0.01] * 2 * STEPS)
    # Timing's step_time measures the machine: filed under system/ (the System metrics tab)
    assert steps(client, run_id, "system/step_time") == list(range(1, 2 * STEPS + 1))
    assert "step_time" not in run.data.metrics and "system/val_time" in run.data.metrics
    # the epoch's loss is the last step's running mean: logged once at that step, not twice
    assert values(client, run_id, "loss")[STEPS - 1] == pytest.approx(done.history["loss"][0])


def test_epoch_validation_and_test_metrics_land_on_the_right_steps(job) -> None:
    done, client, run = job
    run_id = run.info.run_id
    assert steps(client, run_id, "val_loss") == [STEPS, 2 * STEPS]
    assert values(client, run_id, "val_loss") == pytest.approx(done.history["val_loss"])
    assert steps(client, run_id, "epoch") == [STEPS, 2 * STEPS]
    assert values(client, run_id, "epoch") == [0.0, 1.0]
    assert steps(client, run_id, "test_loss") == [2 * STEPS]  # the final step, not 0
    assert values(client, run_id, "test_accuracy") == pytest.approx([done.test["accuracy"]])
    assert "validation_loss" not in run.data.metrics  # no second copy of validation


def test_predict_count_latency_and_class_distribution(job) -> None:
    _, client, run = job
    metrics = run.data.metrics
    # what predict cost is the machine's, on the System metrics tab
    assert metrics["system/predict_count"] == 10
    assert metrics["system/predict_latency_s"] > 0
    assert "predict_latency_s" not in metrics
    # Per-class counts are an artifact, not a chart per class on the run page.
    assert not any(key.startswith("predict_class") for key in metrics)
    path = client.download_artifacts(run.info.run_id, "predict_class_counts.json")
    counts = json.loads(Path(path).read_text())
    assert set(counts) == {"cat", "dog", "bird"} and sum(counts.values()) == 10
    assert steps(client, run.info.run_id, "system/predict_count") == [2 * STEPS]


def test_params_are_the_flattened_config_without_secrets(job) -> None:
    done, _, run = job
    params = run.data.params
    assert params["model.name"] == "tiny"
    assert params["trainer.lr"] == "0.01"
    assert params["data.augment"] == '["flip", "crop"]'
    assert params["db.url"] == "postgresql://trainer:***@db.local/runs"
    assert params["fit.epochs"] == "2"
    assert params["fit.steps_per_epoch"] == str(STEPS)
    assert params["model.params.total"] == str(done.model.count_params())
    everything = " ".join([*params.values(), *run.data.tags.values()])
    assert SECRET not in everything
    assert "hunter2" not in everything


def test_tags(job) -> None:
    _, _, run = job
    tags = run.data.tags
    assert tags["trainkit.model"] == "tiny"
    assert tags["trainkit.callbacks"] == "test"
    assert tags["team"] == "vision"
    assert tags["trainkit.stop_reason"] == "val_loss did not improve for 3 epochs"
    git = git_commit()
    if git is not None:  # the tests run from a git checkout, and CI from a clone
        assert tags["trainkit.git_commit"] == git[0]


def test_artifacts(job) -> None:
    _, client, run = job
    found = artifacts(client, run.info.run_id)
    assert {
        "model_summary.txt",
        "config.yaml",
        "confusion_matrix.json",
        "plots/training_curves.png",
        "plots/learning_rate.png",
        "plots/confusion_matrix.png",
        "checkpoints/best.keras",
    } <= found
    summary = client.download_artifacts(run.info.run_id, "model_summary.txt")
    assert "Conv2D" in Path(summary).read_text()
    if client.tracking_uri.startswith("sqlite:///"):
        # next to the database, not in ./mlruns of whatever directory the job ran from
        database = Path(client.tracking_uri.removeprefix("sqlite:///"))
        assert run.info.artifact_uri.startswith((database.parent / "mlruns").as_uri())


def test_logged_model_loads_and_predicts(job, arrays: Any) -> None:
    done, client, run = job
    uri = run.data.tags["trainkit.model_uri"]
    assert uri.startswith("models:/")
    x = arrays[0][:3]
    with global_tracking_uri(client.tracking_uri):
        pyfunc = mlflow.pyfunc.load_model(uri)
        keras_model = mlflow.keras.load_model(uri)
    assert pyfunc.metadata.signature is not None
    expected = done.model.predict(x, verbose=0)
    np.testing.assert_allclose(np.asarray(pyfunc.predict(x)), expected, rtol=1e-5)
    # a SavedModel (loads without trainkit): its endpoint is serve
    np.testing.assert_allclose(np.asarray(keras_model.serve(x)), expected, rtol=1e-5)
    logged = client.get_logged_model(uri.removeprefix("models:/"))
    assert logged.experiment_id == run.info.experiment_id
    assert logged.source_run_id == run.info.run_id


# ---------------------------------------------------------------------------- statuses


class Boom(keras.callbacks.Callback):
    def __init__(self, error: type[BaseException], at_batch: int) -> None:
        super().__init__()
        self.error = error
        self.at_batch = at_batch
        self.epoch = 0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch = epoch

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if self.epoch == 1 and batch == self.at_batch:
            raise self.error("boom")


@pytest.mark.parametrize(
    ("error", "status"), [(RuntimeError, "FAILED"), (KeyboardInterrupt, "KILLED")]
)
def test_a_job_cut_short_ends_its_run_with_its_status(
    tmp_path: Path, arrays: Any, error: type[BaseException], status: str
) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    logger = MLflowLogger()
    context = make_context(tmp_path / "run", uri, arrays)
    done = run_job(context, [logger], arrays, extra=[Boom(error, 1)])
    assert done.status == status
    client = MlflowClient(uri)
    run = client.get_run(logger.run.run_id)
    assert run.info.status == status
    # what happened before the error is all there
    assert steps(client, run.info.run_id, "loss") == list(range(1, STEPS + 3))


# ---------------------------------------------------------------------------- steps


class Acting(keras.callbacks.Callback):
    """A callback that acts on the model: which batch hooks it gets, and with which keys."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[int, list[str]]] = []

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self.calls.append((batch, sorted(logs or {})))


def test_steps_per_execution_logs_every_step_to_mlflow_and_tensorboard(
    tmp_path: Path, arrays: Any
) -> None:
    """At steps_per_execution=4, Keras calls the batch hooks after steps 4, 5, 9 and 10 (an
    epoch of 5 steps); MLflow and TensorBoard still get every step, with the values a run at
    steps_per_execution=1 logs. A callback that acts on the model still gets Keras's calls and
    Keras's keys, and the model's train_step is Keras's own again after fit."""
    from callbacks.tensorboard import TensorBoardLogger
    from tests.tracking.test_tensorboard import load, scalars

    runs = {}
    for k in (1, 4):
        uri = f"sqlite:///{tmp_path / f'k{k}' / 'mlflow.db'}"
        logger, board, acting = MLflowLogger(), TensorBoardLogger(histogram_freq=0), Acting()
        context = make_context(tmp_path / f"k{k}" / "run", uri, arrays)
        job = run_job(context, [logger, board, acting], arrays, steps_per_execution=k)
        runs[k] = (MlflowClient(uri), logger.run.run_id, context, acting, job)

    client, run_id, context, acting, job = runs[4]
    assert steps(client, run_id, "loss") == list(range(1, 11))
    assert steps(client, run_id, "accuracy") == list(range(1, 11))
    assert steps(client, run_id, "val_loss") == [5, 10]
    assert client.get_run(run_id).data.params["fit.steps_per_execution"] == "4"
    one = runs[1]
    for key in ("loss", "accuracy"):
        assert values(client, run_id, key) == pytest.approx(values(one[0], one[1], key), abs=1e-6)
    board = scalars(load(context.run_dir / "tensorboard" / "train"), "batch_loss")
    assert [step for step, _ in board] == list(range(1, 11))
    assert [v for _, v in board] == pytest.approx(values(client, run_id, "loss"))
    # the model's own callbacks: one call per execution (batch indices as Keras passes them,
    # unclipped), with the keys of a plain Keras fit
    assert [batch for batch, _ in acting.calls] == [3, 7, 3, 7]
    assert {tuple(keys) for _, keys in acting.calls} == {("accuracy", "loss")}
    assert "train_step" not in vars(job.model)
    assert set(job.history) == {"accuracy", "loss", "val_accuracy", "val_loss"}


def test_log_every_n_steps(tmp_path: Path, arrays: Any) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    logger = MLflowLogger(log_every_n_steps=3)
    run_job(make_context(tmp_path / "run", uri, arrays), [logger], arrays, evaluate=False)
    client = MlflowClient(uri)
    run_id = logger.run.run_id
    # every 3rd step, plus the epoch's values at its last step (5, 10)
    assert steps(client, run_id, "lr") == [3, 6, 9]
    assert steps(client, run_id, "loss") == [3, 5, 6, 9, 10]


class SlowStep(keras.callbacks.Callback):
    """After the logger: adds a key to each step's logs and makes each step last 20 ms."""

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        time.sleep(0.02)
        logs["after_logger"] = float(batch)


def test_rows_handed_over_during_the_epoch_lose_no_step(tmp_path: Path, arrays: Any) -> None:
    """The batch hook only appends a row; with a 10 ms flush interval the writer asks for the
    rows every step or two, mid-epoch: every step still reaches the store, with the keys of the
    callbacks placed after the logger, and the learning rate (read once an epoch)."""
    handed: list[int] = []

    class Counting(MLflowLogger):
        def _hand_over(self) -> None:
            handed.append(len(self._rows))
            super()._hand_over()

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    logger = Counting(flush_interval=0.01)
    run_job(make_context(tmp_path / "run", uri, arrays), [logger], arrays, extra=[SlowStep()])
    assert logger._rows == [] and not logger.writer.rows  # everything handed over, converted
    assert sum(1 for n in handed if 0 < n < STEPS) >= 2  # handed over mid-epoch too
    client = MlflowClient(uri)
    run_id = logger.run.run_id
    every_step = list(range(1, 2 * STEPS + 1))
    assert steps(client, run_id, "loss") == every_step
    assert steps(client, run_id, "after_logger") == every_step
    assert values(client, run_id, "after_logger") == [float(b) for b in range(STEPS)] * 2
    assert steps(client, run_id, "lr") == every_step
    assert logger._lr_points == [(step, pytest.approx(0.01)) for step in every_step]


@pytest.mark.slow
def test_a_resumed_job_continues_the_same_run(tmp_path: Path, arrays: Any) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    first = MLflowLogger()
    crashed = run_job(
        make_context(tmp_path / "run", uri, arrays),
        [first],
        arrays,
        extra=[Boom(RuntimeError, 2)],
    )
    assert crashed.status == "FAILED"
    assert (tmp_path / "run" / "mlflow_run_id").read_text().strip() == first.run.run_id

    # The restarted job resumes from its epoch-1 checkpoint: epochs 1 and 2 again.
    second = MLflowLogger()
    context = make_context(tmp_path / "run", uri, arrays)
    run_job(context, [second], arrays, epochs=3, initial_epoch=1)
    assert second.run.run_id == first.run.run_id
    client = MlflowClient(uri)
    run = client.get_run(first.run.run_id)
    assert run.info.status == "FINISHED"
    assert steps(client, run.info.run_id, "loss") == list(range(1, 3 * STEPS + 1))
    assert steps(client, run.info.run_id, "epoch") == [5, 10, 15]

    # Trained anew from epoch 0 on the same run directory: the history goes on after step 15.
    third = MLflowLogger()
    run_job(make_context(tmp_path / "run", uri, arrays), [third], arrays, epochs=1, evaluate=False)
    assert third.run.run_id == first.run.run_id
    assert steps(client, run.info.run_id, "loss") == list(range(1, 4 * STEPS + 1))


# ---------------------------------------------------------------------------- store down


def run_without_store(
    tmp_path: Path, uri: str, arrays: Any, caplog: pytest.LogCaptureFixture
) -> tuple[MLflowLogger, list[str]]:
    """A job that logs to a store that never answers: it finishes; the store's warnings."""
    logger = MLflowLogger()
    with caplog.at_level(logging.WARNING, logger="trainkit.tracking"):
        done = run_job(make_context(tmp_path / "run", uri, arrays), [logger], arrays)
    assert done.status == "FINISHED"
    return logger, [r.getMessage() for r in caplog.records if "does not answer" in r.getMessage()]


@pytest.mark.server
def test_an_unreachable_server_at_start_spools_then_replays(
    tmp_path: Path, arrays: Any, mlflow_server, caplog: pytest.LogCaptureFixture
) -> None:
    from tests.tracking.helpers import free_port
    from trainkit.tracking import replay

    dead = f"http://127.0.0.1:{free_port()}"
    _, warnings = run_without_store(tmp_path, dead, arrays, caplog)
    assert warnings and dead in warnings[0] and "tracking.uri" in warnings[0]
    assert any("points kept in" in r.getMessage() for r in caplog.records)
    spool = tmp_path / "run" / "mlflow_spool.jsonl"
    assert spool.exists()
    assert not (tmp_path / "run" / "mlflow_run_id").exists()

    run_id, count = replay.replay(tmp_path / "run", uri=mlflow_server.uri)
    assert count >= 2 * STEPS * 3  # loss, accuracy, lr at every step, and more
    client = MlflowClient(mlflow_server.uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert steps(client, run_id, "loss") == list(range(1, 2 * STEPS + 1))
    assert steps(client, run_id, "val_loss") == [STEPS, 2 * STEPS]
    assert run.data.params["fit.epochs"] == "2"
    assert "plots/training_curves.png" in artifacts(client, run_id)
    assert not spool.exists()


def test_a_new_run_the_writer_thread_cannot_open_is_spooled_then_replayed(
    tmp_path: Path, arrays: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A new run is opened by the writer thread, not in on_train_begin: when that fails, the
    job still warns once, naming the store, and loses no point."""
    from trainkit.tracking import replay

    (tmp_path / "not-a-folder").write_text("a file where the store's folder should be")
    broken = f"sqlite:///{tmp_path}/not-a-folder/mlflow.db"
    logger, warnings = run_without_store(tmp_path, broken, arrays, caplog)
    assert len(warnings) == 1 and "not-a-folder" in warnings[0], warnings
    assert not logger.run.is_open
    assert (tmp_path / "run" / "mlflow_spool.jsonl").exists()

    good = f"sqlite:///{tmp_path}/mlflow.db"
    run_id, _ = replay.replay(tmp_path / "run", uri=good)
    client = MlflowClient(good)
    assert client.get_run(run_id).info.status == "FINISHED"
    assert steps(client, run_id, "loss") == list(range(1, 2 * STEPS + 1))
    assert steps(client, run_id, "val_loss") == [STEPS, 2 * STEPS]


class StopsServer(keras.callbacks.Callback):
    """After epoch 1: the points so far are written, then the server goes away."""

    def __init__(self, logger: MLflowLogger, server) -> None:
        super().__init__()
        self.logger = logger
        self.server = server
        self.spooled_while_down = 0

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if epoch == 0:
            assert self.logger.writer.flush(30)
            self.server.stop()

    def on_train_end(self, logs: dict | None = None) -> None:
        self.logger.writer.flush(30)
        self.spooled_while_down = self.logger.writer.spooled
        self.server.start()  # same port, same store


@pytest.mark.server
def test_server_stopped_mid_run_loses_no_point(tmp_path: Path, arrays: Any, mlflow_server) -> None:
    logger = MLflowLogger(flush_interval=0.2)
    stopper = StopsServer(logger, mlflow_server)
    done = run_job(
        make_context(tmp_path / "run", mlflow_server.uri, arrays), [logger], arrays, extra=[stopper]
    )
    assert done.status == "FINISHED"
    assert stopper.spooled_while_down > 0  # the store really was away during epoch 2
    client = MlflowClient(mlflow_server.uri)
    run = client.get_run(logger.run.run_id)
    assert run.info.status == "FINISHED"
    for key in ("loss", "accuracy", "lr"):
        assert steps(client, run.info.run_id, key) == list(range(1, 2 * STEPS + 1)), key
    assert steps(client, run.info.run_id, "val_loss") == [STEPS, 2 * STEPS]
    assert steps(client, run.info.run_id, "test_loss") == [2 * STEPS]
    assert "plots/training_curves.png" in artifacts(client, run.info.run_id)
    assert not (tmp_path / "run" / "mlflow_spool.jsonl").exists()
