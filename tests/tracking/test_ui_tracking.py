"""What a user sees of a run in MLflow: its name, its description, the experiment's kind, the
per-class counts, and a sweep's comparison of its jobs. Real SQLite stores, real tiny jobs."""

from __future__ import annotations

import csv
import json
import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import keras
import pytest
from mlflow import MlflowClient

from callbacks.mlflow import MLflowLogger
from tests.tracking.helpers import make_context, run_job
from trainkit.tracking.store import (
    EXPERIMENT_KIND_TAG,
    MODEL_TRAINING_KIND,
    RunSpec,
    TrackedRun,
    default_run_name,
)
from trainkit.tracking.sweep import OPTIMIZED_METRIC_TAG, OPTIMIZED_VALUE_TAG

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, arrays: Any) -> dict[str, Any]:
    """Two tiny jobs in one store, seeded alike (as ``trainer.seed`` does); then a run the user
    named with ``tracking.run_name``."""
    tmp = tmp_path_factory.mktemp("names")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    runs = []
    for i in range(2):
        keras.utils.set_random_seed(42)  # what the job does with trainer.seed
        context = make_context(tmp / f"run{i}", uri, arrays)
        logger = MLflowLogger(flush_interval=0.5)
        job = run_job(context, [logger], arrays, epochs=1)
        assert job.status == "FINISHED"
        runs.append(MlflowClient(uri).get_run(logger.run.run_id))
    # What tracking.run_name=my-baseline gives the callback.
    named = MLflowLogger()
    named.set_context(make_context(tmp / "named", uri, arrays, run_name="my-baseline"))
    run = TrackedRun(named._spec())
    run.open()
    runs.append(run.client.get_run(run.run_id))
    return {"uri": uri, "runs": runs}


@pytest.mark.slow
def test_two_runs_in_one_store_have_different_readable_names(store) -> None:
    first, second, _ = (run.info.run_name for run in store["runs"])
    assert first != second
    # model-stack-MMDD-HHMM; a second run in the same minute gets -2.
    for name in (first, second):
        assert re.fullmatch(r"tiny-test-\d{4}-\d{4}(-2)?", name), name
    assert default_run_name("tiny", "test", 0.0) == time.strftime(
        "tiny-test-%m%d-%H%M", time.localtime(0)
    )


@pytest.mark.slow
def test_tracking_run_name_is_used_as_given(store) -> None:
    assert store["runs"][2].info.run_name == "my-baseline"


@pytest.mark.slow
def test_the_experiment_is_marked_for_model_training(store) -> None:
    client = MlflowClient(store["uri"])
    experiment = client.get_experiment(store["runs"][0].info.experiment_id)
    assert experiment.tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING_KIND == "custom_model_development"


@pytest.mark.slow
def test_the_description_says_what_ran(store) -> None:
    note = store["runs"][0].data.tags["mlflow.note.content"]
    assert "**tiny**" in note and "**random**" in note and "**test** callback stack" in note
    assert "python " in note  # the command that runs it again


@pytest.mark.slow
def test_per_class_counts_are_one_artifact_not_metrics(store) -> None:
    client = MlflowClient(store["uri"])
    run = store["runs"][0]
    assert not [key for key in run.data.metrics if key.startswith("predict_class")]
    counts = json.loads(
        Path(client.download_artifacts(run.info.run_id, "predict_class_counts.json")).read_text()
    )
    assert set(counts) == {"cat", "dog", "bird"} and sum(counts.values()) == 10


@pytest.mark.slow
def test_each_run_says_its_optimized_metric(store) -> None:
    tags = store["runs"][0].data.tags
    assert tags[OPTIMIZED_METRIC_TAG] == "val_accuracy"
    assert 0.0 <= float(tags[OPTIMIZED_VALUE_TAG]) <= 1.0


def test_naming_the_run_leaves_the_seeded_sequence_alone(tmp_path: Path) -> None:
    random.seed(7)
    expected = [random.random() for _ in range(3)]
    random.seed(7)
    run = TrackedRun(RunSpec(uri=f"sqlite:///{tmp_path / 'mlflow.db'}", name_hint="a-b-c"))
    run.open()
    assert [random.random() for _ in range(3)] == expected
    assert run.client.get_run(run.run_id).info.run_name == "a-b-c"


@pytest.mark.slow
def test_an_experiment_kind_the_user_chose_is_kept(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    mine = client.create_experiment("mine", tags={EXPERIMENT_KIND_TAG: "genai_development"})
    plain = client.create_experiment("plain")
    TrackedRun(RunSpec(uri=uri, experiment="mine")).open()
    TrackedRun(RunSpec(uri=uri, experiment="plain")).open()
    assert client.get_experiment(mine).tags[EXPERIMENT_KIND_TAG] == "genai_development"
    assert client.get_experiment(plain).tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING_KIND


@pytest.mark.slow
def test_a_sweeps_parent_run_compares_its_jobs_as_they_end(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    sweep_dir = tmp_path / "multirun" / "2030-01-01" / "12-00-00"
    client = MlflowClient(uri)
    parent_id = None
    for num, (lr, value) in enumerate([("0.1", 0.5), ("0.01", 0.75)]):
        spec = RunSpec(
            uri=uri,
            run_name=f"#{num} lr={lr}",
            tags={"trainkit.job_num": str(num), "trainkit.overrides": f"lr={lr}"},
            sweep_dir=str(sweep_dir),
        )
        run = TrackedRun(spec)
        run.open()
        parent_id = run.parent_run_id
        run.set_tags({OPTIMIZED_METRIC_TAG: "val_accuracy", OPTIMIZED_VALUE_TAG: str(value)})
        run.end("FINISHED")
        names = {a.path for a in client.list_artifacts(parent_id)}
        assert {"sweep_comparison.csv", "sweep_comparison.md", "sweep_comparison.png"} <= names
        table = client.download_artifacts(parent_id, "sweep_comparison.csv", str(tmp_path))
        with Path(table).open() as text:
            rows = list(csv.DictReader(text))
        assert len(rows) == num + 1  # updated as each job ends
    assert [(r["run"], r["status"], r["metric"], r["value"]) for r in rows] == [
        ("#0 lr=0.1", "FINISHED", "val_accuracy", "0.5"),
        ("#1 lr=0.01", "FINISHED", "val_accuracy", "0.75"),
    ]
    assert "| #1 lr=0.01 |" in (sweep_dir / "sweep_comparison.md").read_text()
    assert (sweep_dir / "sweep_comparison.png").stat().st_size > 1000


def _import_tensorflow(env: dict[str, str]) -> subprocess.Popen:
    code = "from trainkit.runtime import quiet_tensorflow; quiet_tensorflow(); import keras"
    return subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _stderr(process: subprocess.Popen) -> str:
    try:
        _, err = process.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise
    assert process.returncode == 0, err[-2000:]
    return err


@pytest.mark.slow  # two imports of TensorFlow in subprocesses
def test_tensorflow_start_up_chatter_is_off_unless_asked_for() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TF_CPP", "TRAINKIT_TF"))}
    # Both imports at once: each is a separate process, they share nothing.
    quiet_process = _import_tensorflow(env)
    loud_process = _import_tensorflow({**env, "TRAINKIT_TF_LOGS": "1"})
    quiet, loud = _stderr(quiet_process), _stderr(loud_process)
    assert "absl::InitializeLog" not in quiet and "oneDNN" not in quiet, quiet
    assert "absl::InitializeLog" in loud or "oneDNN" in loud, loud
