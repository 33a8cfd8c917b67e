"""NanGuard: a loss that turns NaN stops training with the reason and finite weights."""

from __future__ import annotations

import keras
import numpy as np

from callbacks.nan_guard import NanGuard
from tests.callbacks.cb_testing import (
    ModelPool,
    Recorder,
    assert_weights_equal,
    batches,
    regression_data,
)

# One model for both tests, reset before each fit (the NaN weights and Adam slots included).
MODELS = ModelPool()


def poisoned_data(bad_batch: int, batch_size: int = 4, n: int = 32):
    """Data whose batch ``bad_batch`` (in every epoch, no shuffling) holds a NaN target."""
    x, y = regression_data(n)
    y[bad_batch * batch_size, 0] = np.nan
    return x, y


def test_stops_at_the_bad_batch_and_restores_the_last_snapshot():
    x, y = poisoned_data(bad_batch=5)  # 8 batches of 4
    model = MODELS.get(optimizer="adam")
    before = Recorder(batch_weights=True)  # sees the weights before the guard restores them
    guard = NanGuard(snapshot_every_n_batches=2, verbose=0)
    after = Recorder()
    history = model.fit(
        batches(x, y, 4), epochs=3, shuffle=False, verbose=0, callbacks=[before, guard, after]
    )
    assert (guard.stop_reason, guard.stopped_epoch, guard.stopped_batch) == ("non_finite", 0, 5)
    assert np.isnan(guard.bad_value)
    assert len(history.history["loss"]) == 1
    assert [batch for _, batch, _ in before.batch_end] == [0, 1, 2, 3, 4, 5]
    assert any(np.isnan(w).any() for w in before.batch_weights[5])  # the NaN step did happen
    # snapshots after batches 1 and 3 (every 2): the weights after batch 3 are back
    assert_weights_equal(model.get_weights(), before.batch_weights[3])
    assert all(np.isfinite(w).all() for w in model.get_weights())
    assert all(np.isfinite(v.numpy()).all() for v in model.optimizer.variables)
    assert after.batch_end[-1][2]["stop_reason"] == "non_finite"
    assert after.epoch_logs[-1]["stop_reason"] == "non_finite"
    assert after.epoch_logs[-1]["nan_guard_batch"] == 5


def test_default_snapshot_is_the_last_finite_epoch():
    model = MODELS.get(optimizer="adam")
    recorder = Recorder(weights=True)
    guard = NanGuard(verbose=0)

    class PoisonSecondEpoch(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 1:
                # a NaN head bias (a NaN before the ReLU would be cut to 0): NaN loss
                weights = self.model.get_weights()
                weights[-1][0] = np.nan
                self.model.set_weights(weights)

    history = model.fit(
        batches(*regression_data(32)),
        epochs=3,
        shuffle=False,
        verbose=0,
        callbacks=[recorder, PoisonSecondEpoch(), guard],
    )
    assert (guard.stop_reason, guard.stopped_epoch, guard.stopped_batch) == ("non_finite", 1, 0)
    assert guard.snapshot_epoch == 0
    assert len(history.history["loss"]) == 2
    assert_weights_equal(model.get_weights(), recorder.epoch_weights[0])
