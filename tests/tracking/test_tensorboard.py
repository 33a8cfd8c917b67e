"""TensorBoardLogger: what the event files hold, read back with TensorBoard's own reader."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from tests.tracking.helpers import STEPS
from trainkit.tracking.flatten import flatten

pytestmark = pytest.mark.parametrize("job", ["sqlite"], indirect=True)


def load(directory: Path) -> EventAccumulator:
    accumulator = EventAccumulator(str(directory), size_guidance={"tensors": 0, "images": 0})
    accumulator.Reload()
    return accumulator


def scalars(accumulator: EventAccumulator, tag: str) -> list[tuple[int, float]]:
    return [(e.step, float(tf.make_ndarray(e.tensor_proto))) for e in accumulator.Tensors(tag)]


def image_shape(accumulator: EventAccumulator, tag: str) -> tuple[int, int, int]:
    # tf.summary.image stores [width, height, png...] as a string tensor
    events = accumulator.Tensors(tag)
    assert len(events) == 1
    encoded = tf.make_ndarray(events[0].tensor_proto)[2]
    return tuple(tf.io.decode_png(encoded).shape)


def tb_root(job: Any) -> Path:
    return job[0].context.run_dir / "tensorboard"


def test_train_scalars_per_epoch_and_per_step(job: Any) -> None:
    done = job[0]
    train = load(tb_root(job) / "train")
    epoch_loss = scalars(train, "epoch_loss")
    assert [s for s, _ in epoch_loss] == [0, 1]
    assert [v for _, v in epoch_loss] == pytest.approx(done.history["loss"], rel=1e-5)
    batch_loss = scalars(train, "batch_loss")
    assert [s for s, _ in batch_loss] == list(range(1, 2 * STEPS + 1))
    assert batch_loss[STEPS - 1][1] == pytest.approx(done.history["loss"][0], rel=1e-5)
    assert [s for s, _ in scalars(train, "batch_accuracy")] == list(range(1, 2 * STEPS + 1))
    assert [v for _, v in scalars(train, "epoch_learning_rate")] == pytest.approx([0.01, 0.01])
    histograms = [t for t in train.Tags()["tensors"] if t.endswith("/histogram")]
    assert len(histograms) == 4  # conv and dense kernels and biases
    assert len(train.Tensors(histograms[0])) == 2  # every epoch


def test_validation_scalars(job: Any) -> None:
    done = job[0]
    validation = load(tb_root(job) / "validation")
    epoch_loss = scalars(validation, "epoch_loss")
    assert [s for s, _ in epoch_loss] == [0, 1]
    assert [v for _, v in epoch_loss] == pytest.approx(done.history["val_loss"], rel=1e-5)


def test_images_augmented_grid_and_confusion_matrix(job: Any) -> None:
    train = load(tb_root(job) / "train")
    # 6 sample images of 8x8 in one row, 1-pixel gutters
    assert image_shape(train, "augmented_samples") == (8, 6 * 8 + 5, 3)
    test = load(tb_root(job) / "test")
    height, width, channels = image_shape(test, "confusion_matrix")
    assert channels == 3 and height > 100 and width > 100
    assert [s for s, _ in scalars(test, "test_loss")] == [2 * STEPS]
    assert scalars(test, "test_accuracy")[0][1] == pytest.approx(job[0].test["accuracy"])


def test_hparams_session_for_the_sweep_dashboard(job: Any) -> None:
    root = load(tb_root(job))
    content = root.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    hparams = start.session_start_info.hparams
    expected = flatten(job[0].context.config)
    assert set(hparams) == set(expected)
    assert hparams["model.name"].string_value == "tiny"
    assert hparams["trainer.lr"].number_value == pytest.approx(0.01)
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"])
    metrics = {(m.name.group, m.name.tag) for m in experiment.experiment.metric_infos}
    assert ("validation", "epoch_loss") in metrics
    assert ("validation", "epoch_accuracy") in metrics
    end = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_end_info"])
    assert end.session_end_info.status == 1  # STATUS_SUCCESS


def test_the_matrix_counts_every_test_image(job: Any) -> None:
    from trainkit.tracking.evaluation import confusion_on_test_split

    done = job[0]
    matrix = confusion_on_test_split(done.context, done.model)
    assert matrix is not None and matrix.shape == (3, 3)
    assert int(matrix.sum()) == 16
    labels = np.concatenate([y.numpy() for _, y in done.context.test_data])
    np.testing.assert_array_equal(matrix.sum(axis=1), np.bincount(labels, minlength=3))
