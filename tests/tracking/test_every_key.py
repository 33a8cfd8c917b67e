"""Every key reaches the loggers: what any callback of the stack writes into the logs, placed
anywhere, is in MLflow, TensorBoard and the hook log at its step."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import keras
import pytest
import tensorflow as tf
from mlflow import MlflowClient
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from callbacks.early_stopping import EarlyStopping
from callbacks.hook_logger import HookLogger
from callbacks.mlflow import MLflowLogger
from callbacks.tensorboard import TensorBoardLogger
from callbacks.timing import Timing
from tests.tracking.helpers import STEPS, make_context, run_job


class WritesLast(keras.callbacks.Callback):
    """A user's callback, placed after every logger: it writes its own keys."""

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        logs["user_batch_key"] = float(batch) + 0.25

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs["user_epoch_key"] = float(epoch) + 0.5

    def on_test_end(self, logs: dict | None = None) -> None:
        logs["user_test_key"] = 7.0


def scalars(directory: Path, tag: str) -> list[tuple[int, float]]:
    accumulator = EventAccumulator(str(directory), size_guidance={"tensors": 0})
    accumulator.Reload()
    if tag not in accumulator.Tags()["tensors"]:
        return []
    return [(e.step, float(tf.make_ndarray(e.tensor_proto))) for e in accumulator.Tensors(tag)]


def history(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    return [(m.step, m.value) for m in client.get_metric_history(run_id, key)]


@pytest.fixture(scope="module")
def keyed_job(tmp_path_factory: pytest.TempPathFactory, arrays: Any):
    tmp = tmp_path_factory.mktemp("every-key")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    context = make_context(tmp / "run", uri, arrays)
    loggers = [
        Timing(),
        HookLogger(),
        TensorBoardLogger(histogram_freq=0, write_graph=False),
        MLflowLogger(flush_interval=0.5),
        EarlyStopping(monitor="val_loss", patience=5),
    ]
    done = run_job(context, loggers, arrays, extra=[WritesLast()])
    assert done.status == "FINISHED"
    return done, MlflowClient(uri), loggers[3].run.run_id


def test_mlflow_records_keys_written_after_it(keyed_job) -> None:
    done, client, run_id = keyed_job
    batch = history(client, run_id, "user_batch_key")
    assert [s for s, _ in batch] == list(range(1, 2 * STEPS + 1))
    assert [v for _, v in batch][:STEPS] == [b + 0.25 for b in range(STEPS)]
    assert history(client, run_id, "user_epoch_key") == [(STEPS, 0.5), (2 * STEPS, 1.5)]
    # early stopping's own keys, placed after the logger (docs/browsing.md lists best_epoch)
    assert [s for s, _ in history(client, run_id, "best_epoch")] == [STEPS, 2 * STEPS]
    best = history(client, run_id, "best_val_loss")
    assert best[-1][1] == pytest.approx(min(done.history["val_loss"]))
    assert history(client, run_id, "test_user_test_key") == [(2 * STEPS, 7.0)]


def test_tensorboard_records_keys_written_after_it(keyed_job) -> None:
    done, _, _ = keyed_job
    root = done.context.run_dir / "tensorboard"
    batch = scalars(root / "train", "batch_user_batch_key")
    assert [s for s, _ in batch] == list(range(1, 2 * STEPS + 1))
    assert scalars(root / "train", "epoch_user_epoch_key") == [(0, 0.5), (1, 1.5)]
    assert [s for s, _ in scalars(root / "train", "epoch_best_epoch")] == [0, 1]
    assert scalars(root / "test", "test_user_test_key") == [(2 * STEPS, 7.0)]


def test_tensorboard_validation_epoch_time_is_not_val_time(keyed_job) -> None:
    done, _, _ = keyed_job
    root = done.context.run_dir / "tensorboard"
    assert scalars(root / "validation", "epoch_time") == []
    val_time = scalars(root / "validation", "epoch_val_time")
    assert [s for s, _ in val_time] == [0, 1]
    assert all(v > 0 for _, v in val_time)
    assert len(scalars(root / "validation", "epoch_loss")) == 2  # val_loss keeps its place


def test_hook_log_records_keys_written_after_it(keyed_job) -> None:
    done, _, _ = keyed_job
    events = [json.loads(line) for line in (done.context.run_dir / "events.jsonl").open()]
    batches = [e for e in events if e["hook"] == "on_train_batch_end"]
    assert len(batches) == 2 * STEPS
    assert [e["logs"]["user_batch_key"] for e in batches[:STEPS]] == [
        b + 0.25 for b in range(STEPS)
    ]
    epochs = [e for e in events if e["hook"] == "on_epoch_end"]
    assert [(e["epoch"], e["logs"]["user_epoch_key"]) for e in epochs] == [(0, 0.5), (1, 1.5)]
    assert all("best_epoch" in e["logs"] for e in epochs)
    tests = [e for e in events if e["hook"] == "on_test_end" and e["phase"] == "test"]
    assert [e["logs"]["user_test_key"] for e in tests] == [7.0]
    # the lines keep the hooks' order
    hooks = [e["hook"] for e in events]
    assert hooks.index("on_train_end") > max(i for i, h in enumerate(hooks) if h == "on_epoch_end")
    assert next(e for e in events if e["hook"] == "on_train_end")["epoch"] == 1
