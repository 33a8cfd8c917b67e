"""Timing writes its keys into the logs later callbacks see; HookProfiler times every hook."""

from __future__ import annotations

import json

import keras

from callbacks.hook_profiler import HookProfiler
from callbacks.timing import Timing
from tests.callbacks.cb_testing import ModelPool, Recorder, batches, regression_data
from trainkit.context import RunContext
from trainkit.stack import build_stack


class SlowEpochEnd(keras.callbacks.Callback):
    """Burns a known amount of time in one hook so the profile can be checked against it."""

    def on_epoch_end(self, epoch, logs=None):
        import time

        time.sleep(0.05)


# One model, reset before each job (its train, test and predict functions traced once); the
# data as a dataset of 4 batches of 8 for fit, validation and evaluate.
MODELS = ModelPool()
X, Y = regression_data(32)
DATA = batches(X, Y)  # 4 steps an epoch


def run_job(tmp_path, print_table=False):
    model = MODELS.get()
    profiler = HookProfiler(print_table=print_table)
    timing = Timing()
    recorder = Recorder()
    callbacks = [profiler, timing, SlowEpochEnd(), recorder]
    context = RunContext(run_dir=tmp_path, batch_size=8)
    stack = build_stack(callbacks, context, model)  # what the job does before fit
    model.fit(DATA, epochs=2, validation_data=DATA, shuffle=False, callbacks=stack.for_fit(2, 4))
    model.evaluate(DATA, callbacks=stack.for_evaluate(4))
    model.predict(X, batch_size=16, callbacks=stack.for_predict(2))
    for callback in callbacks:
        if hasattr(callback, "on_job_end"):
            callback.on_job_end("FINISHED")
    return profiler, recorder


def test_timing_keys_are_in_the_logs_of_later_callbacks(tmp_path):
    _, recorder = run_job(tmp_path)
    for _, _, logs in recorder.batch_end:
        assert logs["step_time"] > 0 and logs["samples_per_sec"] > 0
    for logs in recorder.epoch_logs:
        assert logs["epoch_time"] >= logs["train_time"] > 0
        assert logs["val_time"] > 0
        assert logs["epoch_time"] >= logs["train_time"] + logs["val_time"]
        assert logs["step_time"] == logs["train_time"] / 4
        assert logs["samples_per_sec"] == 8 * 4 / logs["train_time"]
    assert recorder.test_end_logs["test_time"] > 0
    assert recorder.predict_end_logs["predict_time"] > 0


def test_profile_lists_each_callback_and_hook_with_counts(tmp_path):
    profiler, _ = run_job(tmp_path)
    profile = json.loads((tmp_path / "hook_profile.json").read_text())
    callbacks = profile["callbacks"]
    assert set(callbacks) == {"Timing", "SlowEpochEnd", "Recorder"}  # not itself
    recorder = callbacks["Recorder"]
    calls = {hook: stats["calls"] for hook, stats in recorder.items()}
    assert calls == {
        "set_model": 1,  # one stack serves fit, evaluate and predict
        "set_params": 3,
        "on_train_begin": 1,
        "on_epoch_begin": 2,
        "on_train_batch_begin": 8,
        "on_train_batch_end": 8,
        "on_epoch_end": 2,
        "on_test_end": 3,  # two validations and one evaluate
        "on_predict_end": 1,
    }
    # only the hooks a callback overrides are wrapped (set_model/set_params are real methods)
    assert set(callbacks["SlowEpochEnd"]) == {"on_epoch_end", "set_model", "set_params"}
    slow = callbacks["SlowEpochEnd"]["on_epoch_end"]
    assert slow["calls"] == 2 and slow["total_s"] >= 0.1 and slow["max_s"] >= 0.05
    assert callbacks["Timing"]["on_train_batch_end"]["calls"] == 8
    assert profile["wall_time_s"]["train"] >= slow["total_s"]
    assert profile["wall_time_s"]["test"] > 0 and profile["wall_time_s"]["predict"] > 0
    text = (tmp_path / "hook_profile.txt").read_text()
    assert "SlowEpochEnd" in text and "on_train_batch_end" in text
    # detach puts the original methods back
    wrapped = profiler.context.callbacks[1]
    assert "on_train_batch_end" in vars(wrapped)
    profiler.detach()
    assert "on_train_batch_end" not in vars(wrapped)


def test_the_terminal_gets_the_top_hooks_once_and_the_file_gets_all(tmp_path, capsys):
    profiler, _ = run_job(tmp_path, print_table=True)
    out = capsys.readouterr().out
    # Once, at the job's end: the costliest hooks and the path of the full table.
    assert out.count("costliest callback hooks") == 1 and "job FINISHED" in out
    assert "Callback hook times" not in out
    assert f"every callback and hook: {tmp_path / 'hook_profile.txt'}" in out
    rows = [line for line in out.splitlines() if line.startswith("│")]
    assert len(rows) == min(10, sum(1 for stats in profiler.stats.values() if stats[0]))
    totals = [float(row.split("│")[4]) for row in rows]
    assert totals == sorted(totals, reverse=True)  # the costliest first
    assert any("SlowEpochEnd" in row and "on_epoch_end" in row for row in rows)
    full = (tmp_path / "hook_profile.txt").read_text()
    assert "(all hooks)" in full and full.count("│") > out.count("│")
