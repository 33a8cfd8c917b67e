"""The job as users run it: what it returns to a sweeper, what MLflow keeps when it stops early or
fails, the overlays, a store that is down. Each test runs ``trainkit.job.main`` on a composed
config (as ``run.py`` does) or ``run.py`` itself, and reads back what a user would read.

The jobs run their steps eagerly (``trainer.run_eagerly=true``: graph tracing is not what these
tests are about, and it costs seconds a job), and on 16 training images (one step an epoch)
where the number of steps is not what a test checks."""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests import preloaded
from tests.conftest import TINY, compose_config
from trainkit import job

ROOT = Path(__file__).resolve().parents[1]
OUTSIDE = ROOT / "tests" / "outside"


# each test runs the whole job (trainkit.job.main) or a sweep of jobs: seconds each.
pytestmark = pytest.mark.slow

EAGER = "trainer.run_eagerly=true"
SMALL = "data.limit=16"  # one step an epoch, 3 validation and 3 test images


def run(tmp_path: Path, overrides: list[str]) -> float | None:
    cfg = compose_config(
        [*TINY, EAGER, f"tracking.uri=sqlite:///{tmp_path}/mlflow.db", *overrides],
        run_dir=tmp_path / "run",
    )
    return job.main(cfg)


def only_run(tmp_path: Path, experiment: str = "trainkit"):
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1
    return client, runs[0]


def history(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


@pytest.mark.slow
def test_sweeper_gets_the_best_val_accuracy_epoch(tmp_path):
    value = run(
        tmp_path,
        ["callbacks=minimal", SMALL, "trainer.epochs=3", "optimized_metric=val_accuracy"],
    )
    client, found = only_run(tmp_path)
    values = [v for _, v in history(client, found.info.run_id, "val_accuracy")]
    assert len(values) == 3 and value == pytest.approx(max(values))


def test_sweeper_gets_the_lowest_val_mae_a_user_callback_wrote(tmp_path, monkeypatch):
    """``val_mae`` improves downwards: the best epoch is the lowest value, not the highest."""
    monkeypatch.syspath_prepend(str(OUTSIDE))
    value = run(
        tmp_path,
        [
            "callbacks=none",
            SMALL,
            "trainer.epochs=3",
            "optimized_metric=val_mae",
            "+callbacks.mae._target_=scripted.ScriptedEpochKey",
            "+callbacks.mae.key=val_mae",
            "+callbacks.mae.values=[0.5,0.2,0.4]",
        ],
    )
    assert value == pytest.approx(0.2)


def test_an_early_stop_carries_its_reason_to_mlflow(tmp_path):
    value = run(
        tmp_path,
        [
            "callbacks=default",
            SMALL,
            "trainer.epochs=4",
            "++callbacks.early_stopping.stopping_threshold=1000.0",  # any val_loss is below
            "callbacks.tensorboard=null",
        ],
    )
    assert value is not None
    client, found = only_run(tmp_path)
    assert found.info.status == "FINISHED"
    assert found.data.tags["trainkit.stop_reason"] == "threshold"
    assert len(history(client, found.info.run_id, "val_loss")) == 1  # stopped after epoch 1


def test_a_failing_callback_ends_the_run_failed(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(OUTSIDE))
    with pytest.raises(RuntimeError, match="user callback failed at epoch 0"):
        run(
            tmp_path,
            ["callbacks=minimal", SMALL, "+callbacks.bad._target_=scripted.FailAtEpochEnd"],
        )
    _, found = only_run(tmp_path)
    assert found.info.status == "FAILED"


def test_freeze_backbone_trains_only_the_head(tmp_path):
    run(tmp_path, ["callbacks=minimal", SMALL, "model.freeze_backbone=true"])
    _, found = only_run(tmp_path)
    trainable = int(found.data.params["model.params.trainable"])
    total = int(found.data.params["model.params.total"])
    # AlexNet's head at 10 classes: fc_units x 10 weights + 10 biases (TINY: 256 units).
    assert trainable == 256 * 10 + 10 and total > 50 * trainable


@pytest.mark.slow
def test_finetune_overlay_unfreezes_the_backbone(tmp_path, capsys):
    run(
        tmp_path,
        [
            "experiment=finetune",
            "callbacks=minimal",
            SMALL,
            "trainer.epochs=2",
            "callbacks.backbone_finetuning.unfreeze_at_epoch=1",
        ],
    )
    out = capsys.readouterr().out
    assert "BackboneFinetuning" in out and "unfr" in out.lower()
    client, found = only_run(tmp_path, "trainkit")
    assert found.info.status == "FINISHED"


def test_lr_find_overlay_writes_its_suggestion(tmp_path):
    run(tmp_path, ["experiment=lr_find", "callbacks.lr_finder.num_steps=6", "trainer.epochs=3"])
    record = json.loads((tmp_path / "run" / "lr_finder.json").read_text())
    assert record["stop_cause"] != "out_of_steps" and len(record["lrs"]) <= 6
    assert record["suggested_lr"] == record["suggestions"][record["method"]] > 0
    assert (tmp_path / "run" / "lr_finder.png").stat().st_size > 0


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_a_dead_store_spools_and_replay_writes_every_point(tmp_path, capsys):
    dead = f"http://127.0.0.1:{closed_port()}"
    cfg = compose_config(
        [*TINY, EAGER, SMALL, f"tracking.uri={dead}", "callbacks=minimal", "trainer.epochs=2"],
        run_dir=tmp_path / "run",
    )
    job.main(cfg)
    run_dir = tmp_path / "run"
    spool = run_dir / "mlflow_spool.jsonl"
    assert spool.exists()
    uri = f"sqlite:///{tmp_path}/replayed.db"
    replay = [sys.executable, "-m", "trainkit.tracking.replay", str(run_dir), "--uri", uri]
    done = preloaded.run(replay, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("trainkit").experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    steps = [s for s, _ in history(client, runs[0].info.run_id, "loss")]
    train_steps = 2 * 1  # data.limit=16 training examples at batch 16, 2 epochs
    assert steps == list(range(1, train_steps + 1))
    assert not spool.exists()
    # Again: nothing left. In-process (the command line's exit status and output are its
    # main's; one subprocess above proved the command runs).
    from trainkit.tracking.replay import main as replay_main

    capsys.readouterr()
    assert replay_main([str(run_dir), "--uri", uri]) == 0
    assert "nothing to replay" in capsys.readouterr().out
