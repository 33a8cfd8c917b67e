"""``python run.py ...`` as users type it: one job in a subprocess, and what it left.

The job's process is forked from the suite's preloaded interpreter (``tests/preloaded.py``):
what TensorFlow prints while it imports is for a real process to show, the README's first
command in ``tests/test_docs_commands.py`` (``_check_quiet_terminal``). The job is shrunk to 2
steps an epoch, 2 epochs, steps run eagerly (graph tracing is not what these tests are about).
A bad ``data.image_size`` through run.py is test_errors' case ``data.image_size=40`` (the same
command), its whole message test_job's ``test_input_too_small_is_one_line``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from callbacks.base import KERAS_HOOKS
from tests import preloaded

# run.py end to end with the full stack (a module fixture), each test reading what it wrote.
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
ALL_HOOKS = set(KERAS_HOOKS)


def run_cli(
    args: list[str], cwd: Path, timeout: int = 600, pythonpath: tuple[Path, ...] = ()
) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "MPLBACKEND": "Agg"}
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join(str(p) for p in pythonpath)
    return preloaded.run(
        [sys.executable, str(ROOT / "run.py"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="session")
def full_run(tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path, Path]:
    """``run.py model=alexnet callbacks=full`` shrunk to seconds, started from a fresh folder."""
    cwd = tmp_path_factory.mktemp("cli")
    run_dir = cwd / "outputs" / "run"
    result = run_cli(
        [
            "model=alexnet",
            "model.options.fc_units=256",  # as tests/conftest.py's TINY
            "callbacks=full",
            "trainer.precision=float32",
            "data.limit=32",
            "data.image_size=67",
            "trainer.epochs=2",
            "trainer.batch_size=16",
            "trainer.run_eagerly=true",
            "tracking.log_model=false",
            f"hydra.run.dir={run_dir}",
            # Two callbacks from outside trainkit, added the way the guide says.
            "+callbacks.mine._target_=everyhook.EveryHook",
            f"+callbacks.mine.path={cwd / 'seen.txt'}",
            "+callbacks.csv._target_=my_callbacks.BatchLossCSV",
            "+callbacks.csv.every=2",
        ],
        cwd,
        pythonpath=(ROOT / "tests" / "outside", ROOT / "docs" / "examples"),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result, cwd, run_dir


def test_run_directory_layout(full_run):
    _, _, run_dir = full_run
    for name in (".hydra/config.yaml", ".hydra/overrides.yaml", "run.log", "events.jsonl"):
        assert (run_dir / name).is_file(), name
    assert json.loads((run_dir / "class_names.json").read_text())[0] == "0"


def test_events_list_every_hook(full_run):
    _, _, run_dir = full_run
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    assert {e["hook"] for e in events} == ALL_HOOKS
    assert sum(e["hook"] == "on_epoch_end" for e in events) == 2
    # 32 training images in batches of 16: 2 steps an epoch, each with a begin and an end.
    train_ends = [e for e in events if e["hook"] == "on_train_batch_end"]
    assert [(e["epoch"], e["batch"]) for e in train_ends] == [(0, b) for b in range(2)] + [
        (1, b) for b in range(2)
    ]


def test_user_callbacks_from_outside_get_every_hook(full_run):
    _, cwd, run_dir = full_run
    counts = dict(line.split() for line in (cwd / "seen.txt").read_text().splitlines())
    assert set(counts) == ALL_HOOKS
    assert counts["on_epoch_end"] == "2" and counts["on_train_batch_end"] == "4"
    # One stack serves fit, evaluate and predict: the model once, params for each of the three.
    assert counts["set_model"] == "1" and counts["set_params"] == "3"
    # The guide's example: a row every 2 of the 4 steps.
    rows = (run_dir / "batch_loss.csv").read_text().splitlines()
    assert rows[0] == "epoch,step,loss,lr" and [r.split(",")[1] for r in rows[1:]] == ["2", "4"]


def test_mlflow_holds_one_finished_run(full_run):
    from mlflow import MlflowClient

    _, cwd, run_dir = full_run
    client = MlflowClient(tracking_uri=f"sqlite:///{cwd}/mlflow.db")
    experiment = client.get_experiment_by_name("trainkit")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["model.name"] == "alexnet" and params["data.limit"] == "32"
    assert params["trainer.epochs"] == "2"
    assert run.data.tags["trainkit.model"] == "alexnet"
    assert run.data.tags["trainkit.callbacks"] == "full"

    def steps(key):
        return [m.step for m in client.get_metric_history(run.info.run_id, key)]

    # 2 training steps an epoch: per-step training metrics, per-epoch validation, test at the end.
    assert steps("loss") == list(range(1, 5))
    assert steps("lr") == list(range(1, 5))
    assert steps("val_accuracy") == [2, 4]
    assert steps("test_accuracy") == [4]
    history = client.get_metric_history(run.info.run_id, "test_accuracy")
    stdout_test = next(ln for ln in full_run[0].stdout.splitlines() if ln.startswith("test: "))
    assert f"accuracy={history[0].value:.4f}" in stdout_test
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "model_summary.txt", "checkpoints", "plots"} <= artifacts
    # Timing's numbers measure the machine: the System metrics tab, not among loss and accuracy
    metrics = set(run.data.metrics)
    assert {"system/test_time", "system/step_time", "system/samples_per_sec"} <= metrics
    assert {"system/train_time", "system/epoch_time", "system/predict_latency_s"} <= metrics
    model_tab = sorted(key for key in metrics if not key.startswith("system/"))
    # the guide's callback writes batch_loss_rows into the epoch logs: MLflow has it too
    assert "batch_loss_rows" in model_tab
    trainkit_keys = [key for key in model_tab if key != "batch_loss_rows"]
    assert trainkit_keys[:2] == ["accuracy", "best_epoch"], model_tab
    assert {"loss", "lr", "val_loss", "val_accuracy", "test_loss"} <= set(model_tab)
    assert not {"step_time", "test_time", "test_test_time", "predict_count"} & metrics


def test_tensorboard_has_train_and_validation_scalars(full_run):
    import tensorflow as tf
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, _, run_dir = full_run

    def epochs(split, tag):
        acc = EventAccumulator(str(run_dir / "tensorboard" / split), size_guidance={"tensors": 0})
        acc.Reload()
        return [(e.step, float(tf.make_ndarray(e.tensor_proto))) for e in acc.Tensors(tag)]

    for split in ("train", "validation"):
        loss = epochs(split, "epoch_loss")
        assert [step for step, _ in loss] == [0, 1]
        assert all(value > 0 for _, value in loss)
    assert [step for step, _ in epochs("train", "batch_loss")] == list(range(1, 5))


def test_last_lines_say_where_to_look(full_run):
    result, cwd, run_dir = full_run
    lines = result.stdout.strip().splitlines()
    assert any(line.startswith("test: accuracy=") for line in lines)
    assert f"run directory: {run_dir}" in lines
    assert f"browse runs:   mlflow ui --backend-store-uri sqlite:///{cwd}/mlflow.db" in lines
    assert f"browse curves: tensorboard --logdir {run_dir / 'tensorboard'}" in lines
    # The run's page, on MLflow's Model training view (3.17 ignores the experiment's kind tag).
    run_id = (run_dir / "mlflow_run_id").read_text().strip()
    page = [line for line in lines if line.startswith("the run:")]
    assert len(page) == 1 and page[0].endswith(f"/runs/{run_id}?workflowType=machine_learning")
    assert page[0].split()[-1].startswith("http://127.0.0.1:5000/#/experiments/")


def test_the_terminal_is_quiet(full_run):
    result, _, run_dir = full_run
    # The hook profiler's ten costliest hooks, not its 200-line table. (TensorFlow's start-up
    # chatter: the README's command in a real process, tests/test_docs_commands.py.)
    assert "Callback hook times" not in result.stdout
    assert result.stdout.count("costliest callback hooks") == 1
    assert f"every callback and hook: {run_dir / 'hook_profile.txt'}" in result.stdout
    assert "(all hooks)" in (run_dir / "hook_profile.txt").read_text()


def test_unknown_model_lists_the_options(tmp_path):
    result = run_cli(["model=resnet9000"], tmp_path, timeout=120)
    assert result.returncode == 2
    assert "Could not find 'model/resnet9000'" in result.stderr
    assert "alexnet" in result.stderr and "Traceback" not in result.stderr
