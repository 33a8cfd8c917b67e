"""The Keras behaviour docs/writing-callbacks.md states, checked against the installed Keras.

If one of these fails after a Keras upgrade, the guide (and possibly a callback) needs updating.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

from tests.callbacks.cb_testing import make_model, regression_data

HOOKS = [
    "set_model",
    "set_params",
    *(f"on_{p}_{e}" for p in ("train", "test", "predict") for e in ("begin", "end")),
    *(f"on_{p}_batch_{e}" for p in ("train", "test", "predict") for e in ("begin", "end")),
    "on_epoch_begin",
    "on_epoch_end",
]


class Tape(keras.callbacks.Callback):
    """Records (hook, index, copy of logs) for every one of the 16 hooks."""

    def __init__(self):
        super().__init__()
        self.calls = []
        self.params_seen = []

    def set_model(self, model):
        super().set_model(model)
        self.calls.append(("set_model", None, None))

    def set_params(self, params):
        super().set_params(params)
        self.params_seen.append(dict(params))
        self.calls.append(("set_params", None, None))


def _recorder(hook):
    def method(self, *args, logs=None):
        index = args[0] if args and isinstance(args[0], int) else None
        if logs is None and args and not isinstance(args[-1], int):
            logs = args[-1]
        self.calls.append((hook, index, None if logs is None else dict(logs)))

    return method


for _hook in HOOKS[2:]:
    setattr(Tape, _hook, _recorder(_hook))


class AddKey(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        logs["added"] = 1.0

    def on_train_batch_end(self, batch, logs=None):
        logs["added"] = 2.0


def fit_evaluate_predict(steps_per_execution=1, callbacks=()):
    x, y = regression_data(40)  # 5 batches of 8
    vx, vy = regression_data(16, seed=1)  # 2 batches
    model = make_model(steps_per_execution=steps_per_execution)
    tape = Tape()
    cbs = [*callbacks, tape]
    history = model.fit(
        x, y, batch_size=8, epochs=2, validation_data=(vx, vy), verbose=0, callbacks=cbs
    )
    model.evaluate(vx, vy, batch_size=8, verbose=0, callbacks=cbs)
    model.predict(vx, batch_size=8, verbose=0, callbacks=cbs)
    return tape, history


def test_order_logs_and_params():
    tape, _ = fit_evaluate_predict()
    hooks = [hook for hook, _, _ in tape.calls]
    # fit: set_model, set_params once; validation reuses fit's list (no new set_model)
    assert hooks[:5] == [
        "set_model",
        "set_params",
        "on_train_begin",
        "on_epoch_begin",
        "on_train_batch_begin",
    ]
    assert hooks.count("set_model") == 3 and hooks.count("set_params") == 3
    first_epoch_end = hooks.index("on_epoch_end")
    assert hooks[first_epoch_end - 1] == "on_test_end"  # validation runs before on_epoch_end
    calls = {(hook, index): logs for hook, index, logs in tape.calls}
    # begin hooks get empty logs
    assert calls[("on_train_begin", None)] == {} and calls[("on_epoch_begin", 0)] == {}
    assert calls[("on_train_batch_begin", 0)] == {}
    # validation inside fit: on_test_end gets the metrics WITHOUT the val_ prefix ...
    first_test_end = next(logs for hook, _, logs in tape.calls if hook == "on_test_end")
    assert set(first_test_end) == {"loss"}
    # ... and on_epoch_end gets them with it, as python floats
    epoch_logs = calls[("on_epoch_end", 0)]
    assert set(epoch_logs) == {"loss", "val_loss"}
    assert epoch_logs["val_loss"] == first_test_end["loss"]
    assert all(type(v) is float for v in epoch_logs.values())
    # predict batch logs carry the outputs; on_predict_end gets an empty dict
    predict_batch = calls[("on_predict_batch_end", 0)]
    assert set(predict_batch) == {"outputs"} and isinstance(predict_batch["outputs"], np.ndarray)
    assert calls[("on_predict_end", None)] == {}
    # params: fit's steps are training steps (also during validation); evaluate its own
    assert tape.params_seen[0] == {"verbose": 0, "epochs": 2, "steps": 5}
    assert tape.params_seen[1] == {"verbose": 0, "epochs": 1, "steps": 2}
    assert tape.params_seen[2] == {"verbose": 0, "epochs": 1, "steps": 2}


def test_batch_loss_is_the_running_mean_of_the_epoch():
    x, y = regression_data(16)
    model = make_model(lr=0.0)  # no learning: each batch loss can be computed alone
    tape = Tape()
    model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0, callbacks=[tape])
    batch_logs = [logs for hook, _, logs in tape.calls if hook == "on_train_batch_end"]
    per_batch = [model.evaluate(x[i : i + 8], y[i : i + 8], verbose=0) for i in (0, 8)]
    assert batch_logs[0]["loss"] == pytest.approx(per_batch[0], rel=1e-5)
    assert batch_logs[1]["loss"] == pytest.approx(np.mean(per_batch), rel=1e-5)


def test_steps_per_execution_indices():
    tape, _ = fit_evaluate_predict(steps_per_execution=2)
    epoch0 = []
    for hook, index, _ in tape.calls:
        if hook == "on_epoch_end":
            break
        if hook.startswith("on_train_batch"):
            epoch0.append((hook.removeprefix("on_train_batch_"), index))
    # 5 steps, 2 per execution: begin gets the first step, end the last; the partial last
    # execution still reports begin + k - 1 (5, past the last step 4)
    assert epoch0 == [
        ("begin", 0),
        ("end", 1),
        ("begin", 2),
        ("end", 3),
        ("begin", 4),
        ("end", 5),
    ]


def test_mutated_logs_reach_later_callbacks_and_history_not_on_train_end():
    tape, history = fit_evaluate_predict(callbacks=[AddKey()])
    assert all(logs["added"] == 2.0 for hook, _, logs in tape.calls if hook == "on_train_batch_end")
    assert history.history["added"] == [1.0, 1.0]
    train_end = next(logs for hook, _, logs in tape.calls if hook == "on_train_end")
    assert "added" not in train_end and "val_loss" in train_end


class StopAtBatch(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        if batch == 1:
            self.model.stop_training = True


class Boom(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 1:
            raise RuntimeError("boom")


def test_stop_training_mid_epoch_still_validates_and_ends_the_epoch():
    tape, history = fit_evaluate_predict(callbacks=[StopAtBatch()])
    fit_hooks = [h for h, _, _ in tape.calls[: [h for h, *_ in tape.calls].index("on_train_end")]]
    assert fit_hooks.count("on_train_batch_end") == 2
    assert fit_hooks[-2:] == ["on_test_end", "on_epoch_end"]
    assert len(history.history["val_loss"]) == 1


def test_an_exception_skips_on_train_end():
    x, y = regression_data(16)
    tape = Tape()
    with pytest.raises(RuntimeError, match="boom"):
        make_model().fit(x, y, epochs=3, verbose=0, callbacks=[Boom(), tape])
    hooks = [hook for hook, _, _ in tape.calls]
    assert "on_epoch_end" in hooks and "on_train_end" not in hooks
