"""The event-writing helpers shared by the TensorBoard callback."""

from __future__ import annotations

import numpy as np
import pytest

from trainkit.tracking.events import histogram_buckets


def test_histogram_buckets_match_numpy_and_count_every_weight() -> None:
    values = np.random.default_rng(0).normal(size=(300, 7)).astype(np.float32)
    buckets = histogram_buckets(values, bins=30)
    assert buckets.shape == (30, 3)
    assert buckets[:, 2].sum() == values.size
    assert buckets[0, 0] == pytest.approx(values.min()) and buckets[-1, 1] == pytest.approx(
        values.max()
    )
    np.testing.assert_array_equal(buckets[:-1, 1], buckets[1:, 0])  # contiguous edges
    constant = histogram_buckets(np.zeros(5))
    assert constant.tolist() == [[-0.5, 0.5, 5.0]]


def test_profile_batch_writes_a_tensorflow_profiler_trace(tmp_path) -> None:
    import keras

    from callbacks.tensorboard import TensorBoardLogger
    from trainkit.context import RunContext

    x = np.random.default_rng(0).random((48, 8, 8, 3), dtype=np.float32)
    y = np.arange(48) % 3
    model = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )
    model.compile("adam", "sparse_categorical_crossentropy")
    logger = TensorBoardLogger(profile_batch="2,4", histogram_freq=0, sample_images=False)
    logger.set_context(RunContext(run_dir=tmp_path, config={"model": {"name": "tiny"}}))
    model.fit(x, y, batch_size=8, epochs=1, callbacks=[logger], verbose=0)
    logger.on_job_end("FINISHED")
    traces = list((tmp_path / "tensorboard").rglob("*.xplane.pb"))
    assert len(traces) == 1 and traces[0].stat().st_size > 0
    assert "plugins/profile" in traces[0].as_posix()


def test_histograms_hold_each_epochs_weights_read_as_a_snapshot(tmp_path) -> None:
    """The training thread only reads the weights at epoch end (a snapshot); the background
    thread makes them numpy and buckets them later, while the next epoch trains: each epoch's
    histogram still holds that epoch's weights. Without the profiler the batch-begin hook is
    Keras's no-op default, which the stack does not call."""
    import keras
    import tensorflow as tf
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from callbacks.tensorboard import TensorBoardLogger
    from trainkit.context import JobStatus, RunContext
    from trainkit.stack import build_stack

    class Weights(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.kernels = []

        def on_epoch_end(self, epoch, logs=None):
            self.kernels.append(self.model.layers[-1].kernel.numpy())

    x = np.random.default_rng(0).random((48, 8), dtype=np.float32)
    y = np.arange(48) % 3
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(3, activation="softmax")])
    model.compile(keras.optimizers.SGD(0.5), "sparse_categorical_crossentropy")
    logger = TensorBoardLogger(sample_images=False, hparams=False, write_graph=False)
    weights = Weights()
    stack = build_stack([logger, weights], RunContext(run_dir=tmp_path), model)
    hooks = stack._batch_hooks["on_train_batch_begin"]
    assert not any(getattr(hook, "__self__", None) is logger for hook in hooks)
    model.fit(x, y, batch_size=8, epochs=3, callbacks=stack.for_fit(3, 6), verbose=0)
    stack.end_job(JobStatus.FINISHED)

    train = EventAccumulator(str(tmp_path / "tensorboard" / "train"), {"tensors": 0})
    train.Reload()
    (tag,) = [t for t in train.Tags()["tensors"] if t.endswith("kernel/histogram")]
    events = train.Tensors(tag)
    assert [e.step for e in events] == [0, 1, 2]
    for event, kernel in zip(events, weights.kernels, strict=True):
        buckets = tf.make_ndarray(event.tensor_proto)
        assert buckets[:, 2].sum() == kernel.size
        assert buckets[0, 0] == pytest.approx(kernel.min())
        assert buckets[-1, 1] == pytest.approx(kernel.max())
    assert not np.allclose(weights.kernels[0], weights.kernels[2])
