"""Large metric batches to a SQLite store go through the helper process
(trainkit.tracking.store_process): the points land, the training process spends next to no CPU
on them, MLflow's refusals come back as MLflow's errors, and a helper that dies loses no point.
Two tests, one helper each: a helper's start costs about 2 s of CPU (it imports MLflow)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from trainkit.tracking.spool import Spool
from trainkit.tracking.store import RunSpec, TrackedRun, is_client_error
from trainkit.tracking.store_process import START_AT_POINTS, StoreProcessError
from trainkit.tracking.writer import BackgroundWriter


def points(first: int, last: int, value: float = 0.5) -> list[tuple[str, float, int, int]]:
    ms = int(time.time() * 1000)
    return [
        (key, value + step, step, ms) for step in range(first, last + 1) for key in ("loss", "acc")
    ]


def open_run(tmp_path: Path) -> tuple[TrackedRun, str]:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run = TrackedRun(RunSpec(uri=uri, experiment="helper", run_dir=str(tmp_path / "run")))
    (tmp_path / "run").mkdir()
    run.open()
    return run, uri


def history(uri: str, run_id: str, key: str) -> list[tuple[int, float]]:
    return [(m.step, m.value) for m in MlflowClient(uri).get_metric_history(run_id, key)]


def test_large_batches_go_through_the_helper_and_a_dead_helper_loses_no_point(tmp_path: Path):
    run, uri = open_run(tmp_path)
    run.log_points(points(1, 5))  # 10 points: no process for that
    assert run.helper is None
    run.log_points(points(6, 5 + START_AT_POINTS))
    helper = run.helper
    assert helper is not None and helper.alive
    cpu = time.process_time()
    last = 1005 + START_AT_POINTS
    run.log_points(points(6 + START_AT_POINTS, last))  # 2,000 points
    # in-process, MLflow's store takes ~0.25 ms of CPU a point here: 0.5 s for these
    assert time.process_time() - cpu < 0.1
    # what MLflow refuses (log_points makes keys valid; the helper is asked directly) comes back
    # as MLflow's own error: the writer drops it instead of retrying
    with pytest.raises(MlflowException, match="Invalid value") as refused:
        helper.log_batch(run.run_id, [("bad key!?*", 1.0, 0, 1)])
    assert is_client_error(refused.value)

    helper.process.kill()
    helper.process.wait()
    # with a batch in hand, it is a store that does not answer (the writer spools the batch)
    with pytest.raises(StoreProcessError, match="helper process ended") as gone:
        helper.log_batch(run.run_id, points(last + 1, last + 2))
    assert isinstance(gone.value, ConnectionError) and not is_client_error(gone.value)
    # found dead between batches: the next ones are written in-process, nothing lost
    writer = BackgroundWriter(run, Spool(tmp_path / "run" / "spool.jsonl"))
    writer.start()
    writer.points.extend(points(last + 1, last + START_AT_POINTS))
    assert writer.flush(timeout=30)
    writer.close()
    assert run.helper is None
    assert not writer.spool.exists() and writer.written == 2 * START_AT_POINTS
    run.end("FINISHED")
    steps = last + START_AT_POINTS
    assert history(uri, run.run_id, "loss") == [(s, 0.5 + s) for s in range(1, steps + 1)]
    assert len(history(uri, run.run_id, "acc")) == steps
    assert MlflowClient(uri).get_run(run.run_id).info.status == "FINISHED"


def test_a_long_fit_starts_the_helper_at_its_start_and_a_short_one_never(tmp_path: Path):
    import keras
    import numpy as np

    from callbacks.mlflow import MLflowLogger
    from trainkit.context import JobStatus, RunContext
    from trainkit.stack import build_stack
    from trainkit.tracking.store_process import HELPER_AT_STEPS

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    x = np.random.default_rng(0).normal(size=(HELPER_AT_STEPS, 4)).astype("float32")
    y = x.sum(axis=1, keepdims=True)
    seen: dict[int, bool] = {}

    class HelperSeen(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch in (0, 9, HELPER_AT_STEPS // 2):
                helper = logger.run.helper if logger.run is not None else None
                seen[batch] = helper is not None and helper.alive

    for steps in (10, HELPER_AT_STEPS):
        seen.clear()
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
        model.compile("sgd", "mse")
        logger = MLflowLogger(log_plots=False)
        context = RunContext(
            run_dir=tmp_path / f"run{steps}",
            tracking={"uri": uri, "experiment": "helper", "log_model": False},
        )
        stack = build_stack([logger, HelperSeen()], context, model)
        model.fit(x[:steps], y[:steps], batch_size=1, epochs=1, callbacks=stack.for_fit(1, steps))
        stack.end_job(JobStatus.FINISHED)
        history = MlflowClient(uri).get_metric_history(logger.run.run_id, "loss")
        assert sorted(m.step for m in history) == list(range(1, steps + 1))
        if steps == 10:
            assert seen == {0: False, 9: False}
        else:
            # asked for at on_train_begin: up by mid-fit (its start takes a few seconds), long
            # before the writer's first 2-second batch could have started it
            assert seen[HELPER_AT_STEPS // 2]
