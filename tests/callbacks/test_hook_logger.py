"""HookLogger: the exact hook sequence of fit / evaluate / predict, streamed as JSON lines."""

from __future__ import annotations

import json
import time

import keras
import pytest

from callbacks.base import TrainkitCallback
from callbacks.hook_logger import ALL_HOOKS, HookLogger
from tests.callbacks.cb_testing import ModelPool
from trainkit.context import RunContext

POOLS: dict[str, ModelPool] = {}


@pytest.fixture
def reused_tiny_model(tiny_model):
    """``tiny_model()``'s model, built once for this module and reset before each test
    (ModelPool), for the tests of what the logger writes; the tests of the hook sequence itself
    build fresh models."""

    def build(seed=0):
        keras.utils.set_random_seed(seed)
        return tiny_model()

    return POOLS.setdefault("tiny", ModelPool(build)).get


def read_events(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def expected_fit(epochs, train_blocks, val_blocks):
    seq = ["set_model", "set_params", "on_train_begin"]
    for _ in range(epochs):
        seq.append("on_epoch_begin")
        seq += ["on_train_batch_begin", "on_train_batch_end"] * train_blocks
        seq.append("on_test_begin")
        seq += ["on_test_batch_begin", "on_test_batch_end"] * val_blocks
        seq += ["on_test_end", "on_epoch_end"]
    return [*seq, "on_train_end"]


def expected_loop(kind, blocks):
    return [
        "set_model",
        "set_params",
        f"on_{kind}_begin",
        *[f"on_{kind}_batch_begin", f"on_{kind}_batch_end"] * blocks,
        f"on_{kind}_end",
    ]


@pytest.mark.parametrize(
    ("spe", "train_batches", "train_ends"),
    [(1, [0, 1, 2, 3, 4], [0, 1, 2, 3, 4]), (4, [0, 4], [3, 4])],
)
def test_exact_hook_sequence_fit_evaluate_predict(
    tmp_path, tiny_model, tiny_data, spe, train_batches, train_ends
):
    x, y = tiny_data(40)  # 5 training batches of 8
    vx, vy = tiny_data(12, seed=1)  # 2 validation batches of 8
    steps = {"val": 2, "test": 2, "predict": 2}
    logger = HookLogger()
    logger.set_context(RunContext(run_dir=tmp_path, extras={"steps": steps}))
    model = tiny_model(steps_per_execution=spe)
    model.fit(x, y, batch_size=8, epochs=2, validation_data=(vx, vy), callbacks=[logger], verbose=0)
    model.evaluate(vx, vy, batch_size=8, callbacks=[logger], verbose=0)
    model.predict(vx, batch_size=8, callbacks=[logger], verbose=0)
    logger.on_job_end("FINISHED")

    events = read_events(tmp_path / "events.jsonl")
    hooks = [e["hook"] for e in events]
    train_blocks, other_blocks = len(train_batches), (1 if spe == 4 else 2)
    assert hooks == (
        expected_fit(2, train_blocks, other_blocks)
        + expected_loop("test", other_blocks)
        + expected_loop("predict", other_blocks)
    )
    assert set(hooks) == set(ALL_HOOKS)

    epoch0 = [e for e in events if e["epoch"] == 0 and e["phase"] == "train"]
    assert [e["batch"] for e in epoch0 if e["hook"] == "on_train_batch_begin"] == train_batches
    # Keras reports 3 and 7 for the blocks of 5 batches at spe=4; the logger the true 3 and 4.
    assert [e["batch"] for e in epoch0 if e["hook"] == "on_train_batch_end"] == train_ends
    ends = [e for e in events if e["hook"] == "on_train_batch_end"]
    assert all(0 <= e["batch"] <= 4 for e in ends)
    assert all("loss" in e["logs"] for e in ends)

    phases = {e["hook"]: e["phase"] for e in events if e["hook"].startswith("on_test")}
    assert phases["on_test_begin"] == "test"  # the last on_test_begin is evaluate's
    validation = [e for e in events if e["phase"] == "validation"]
    assert {e["hook"] for e in validation} == {
        "on_test_begin",
        "on_test_batch_begin",
        "on_test_batch_end",
        "on_test_end",
    }
    val_end = [e for e in validation if e["hook"] == "on_test_end"][0]
    assert "loss" in val_end["logs"] and "val_loss" not in val_end["logs"]
    epoch_end = [e for e in events if e["hook"] == "on_epoch_end"][0]
    assert "val_loss" in epoch_end["logs"]
    predict_end = [e for e in events if e["hook"] == "on_predict_batch_end"][-1]
    assert predict_end["logs"]["outputs"]["shape"][1] == 3
    assert all(e["dt"] >= 0 for e in events)


def test_hook_filter_and_every_n(tmp_path, reused_tiny_model, tiny_data):
    x, y = tiny_data(80)  # 10 batches of 8
    logger = HookLogger(
        hooks=["on_train_batch_end", "on_epoch_end"], every_n_batches=4, path="sub/ev.jsonl"
    )
    logger.set_context(RunContext(run_dir=tmp_path))
    reused_tiny_model().fit(x, y, batch_size=8, epochs=1, callbacks=[logger], verbose=0)
    logger.close()
    events = read_events(tmp_path / "sub" / "ev.jsonl")
    assert [e["hook"] for e in events] == ["on_train_batch_end"] * 3 + ["on_epoch_end"]
    assert [e["batch"] for e in events[:3]] == [0, 4, 8]


def test_memory_stays_flat_file_grows(tmp_path, reused_tiny_model, tiny_data):
    """Nothing accumulates in the callback: only the file grows with the number of steps."""
    x, y = tiny_data(64)
    logger = HookLogger()
    logger.set_context(RunContext(run_dir=tmp_path))
    before = dict(vars(logger))
    reused_tiny_model().fit(x, y, batch_size=2, epochs=2, callbacks=[logger], verbose=0)
    logger.close()
    grown = [k for k, v in vars(logger).items() if isinstance(v, list | dict) and len(v) > 64]
    assert grown == []
    assert set(vars(logger)) - set(before) <= {"model", "params", "_model", "_params"}
    assert len((tmp_path / "events.jsonl").read_text().splitlines()) == 3 + 2 * (2 + 64) + 1


def test_unknown_hook_rejected():
    with pytest.raises(ValueError, match="unknown hooks"):
        HookLogger(hooks=["on_batch_whatever"])


def test_is_a_trainkit_callback_without_context(
    tmp_path, monkeypatch, reused_tiny_model, tiny_data
):
    monkeypatch.chdir(tmp_path)
    logger = HookLogger(hooks=["on_train_end"])
    assert isinstance(logger, TrainkitCallback)
    x, y = tiny_data(8)
    reused_tiny_model().fit(x, y, epochs=1, callbacks=[logger], verbose=0)
    logger.close()
    assert read_events(tmp_path / "trainkit_run" / "events.jsonl")[0]["hook"] == "on_train_end"


def test_rotation_bounds_the_files_and_keeps_every_line_in_order(
    tmp_path, reused_tiny_model, tiny_data
):
    """With max_bytes the log rotates to events.jsonl.1 .. .keep: bounded, nothing reordered."""
    x, y = tiny_data(64)
    logger = HookLogger(max_bytes=4000, keep=2, block_size=16)
    logger.set_context(RunContext(run_dir=tmp_path))
    reused_tiny_model().fit(x, y, batch_size=2, epochs=2, callbacks=[logger], verbose=0)
    logger.close()
    files = sorted(tmp_path.glob("events.jsonl*"))
    assert [f.name for f in files] == ["events.jsonl", "events.jsonl.1", "events.jsonl.2"]
    for f in files:
        assert f.stat().st_size <= 4000
    # oldest first: .2, .1, then the current file; together the newest events, in order
    events = [e for f in reversed(files) for e in read_events(f)]
    assert events[-1]["hook"] == "on_train_end"
    times = [e["wall_time"] for e in events]
    assert times == sorted(times)
    ends = [e["batch"] for e in events if e["hook"] == "on_train_batch_end"]
    assert ends == list(range(32 - len(ends), 32))  # the last ones, none missing


def test_lines_are_handed_over_at_batch_begins_not_at_epoch_ends(
    tmp_path, reused_tiny_model, tiny_data
):
    """The writer thread gets the lines at a train batch's begin hook (every flush_interval
    seconds; 0 here: every batch), never at an epoch's end, where the training thread runs
    validation and the epoch-end hooks; everything is in the file once fit has returned."""
    seen = []

    class Reader(TrainkitCallback):
        def on_epoch_end(self, epoch, logs=None):
            logger._writer.drain(10)
            seen.append(len((tmp_path / "events.jsonl").read_text().splitlines()))

    x, y = tiny_data(16)
    logger = HookLogger(flush_interval=0)
    logger.set_context(RunContext(run_dir=tmp_path))
    reused_tiny_model().fit(x, y, batch_size=2, epochs=2, callbacks=[logger, Reader()], verbose=0)
    # set_model, set_params, on_train_begin, then per epoch: begin + 8 x 2 batch hooks + end;
    # at an epoch's end the file ends with that epoch's last batch begin
    assert seen == [3 + 1 + 15, 3 + 18 + 1 + 15]
    assert len((tmp_path / "events.jsonl").read_text().splitlines()) == 3 + 36 + 1
    logger.close()


def test_a_long_validation_hands_full_blocks_over(tmp_path, reused_tiny_model, tiny_data):
    """Validation waits for no clock, but a full block still goes to the writer: memory holds
    at most one block however long an evaluation runs."""
    written = []

    class Reader(TrainkitCallback):
        def on_test_end(self, logs=None):
            logger._writer.drain(10)
            lines = read_events(tmp_path / "events.jsonl")
            written.append(sum(e["phase"] == "validation" for e in lines))
            assert len(logger._buffer) <= logger.block_size

    x, y = tiny_data(16)
    logger = HookLogger(block_size=4, flush_interval=3600)
    logger.set_context(RunContext(run_dir=tmp_path))
    model = reused_tiny_model()
    model.fit(x, y, batch_size=2, epochs=1, validation_data=(x, y), callbacks=[logger, Reader()],
              verbose=0)  # fmt: skip
    logger.close()
    assert written and written[0] >= 8  # 8 validation batches, 2 lines each: most written


def test_in_a_stack_every_line_holds_the_keys_of_callbacks_placed_after_it(
    tmp_path, tiny_model, tiny_data
):
    """The train batch lines keep a reference to the step's logs (no after_stack call per
    step): what a later callback adds to the batch and epoch logs is in the lines, every hook
    call has its line, in order, with increasing times."""
    from trainkit.context import JobStatus
    from trainkit.stack import build_stack

    class Later(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            logs["later"] = float(batch)

        def on_epoch_end(self, epoch, logs=None):
            logs["later_epoch"] = epoch

    x, y = tiny_data(32)
    model = tiny_model()
    logger = HookLogger(block_size=3)  # blocks handed over in the middle of an epoch too
    stack = build_stack([logger, Later()], RunContext(run_dir=tmp_path), model)
    assert stack._after_batch == ()  # the logger needs no call after each step
    model.fit(x, y, batch_size=8, epochs=2, callbacks=stack.for_fit(2, 4), verbose=0)
    stack.end_job(JobStatus.FINISHED)

    events = read_events(tmp_path / "events.jsonl")
    seq = ["on_train_begin"]
    for _ in range(2):
        seq += ["on_epoch_begin", *["on_train_batch_begin", "on_train_batch_end"] * 4]
        seq.append("on_epoch_end")
    assert [e["hook"] for e in events if e["hook"] != "set_model"][1:] == [*seq, "on_train_end"]
    ends = [e for e in events if e["hook"] == "on_train_batch_end"]
    assert [e["logs"]["later"] for e in ends] == [0.0, 1.0, 2.0, 3.0] * 2
    assert [e["batch"] for e in ends] == [e["first_batch"] for e in ends] == [0, 1, 2, 3] * 2
    assert all(isinstance(e["logs"]["loss"], float) for e in ends)
    epoch_ends = [e for e in events if e["hook"] == "on_epoch_end"]
    assert [e["logs"]["later_epoch"] for e in epoch_ends] == [0, 1]
    assert [e["epoch"] for e in epoch_ends] == [0, 1]
    times = [e["wall_time"] for e in events]
    assert times == sorted(times) and all(e["dt"] >= 0 for e in events)
    assert abs(times[-1] - time.time()) < 60


def test_lines_keep_non_finite_numpy_and_secret_values_readable(tmp_path):
    """A train batch's float logs are written as they are; anything else (nan, inf, numpy
    scalars, a token under a secret's name, an int beyond 64 bits) as before, as valid JSON."""
    import numpy as np

    logger = HookLogger(block_size=1)
    logger.set_context(RunContext(run_dir=tmp_path))
    rows = [
        {"loss": 0.25, "accuracy": 0.5},
        {"loss": float("nan"), "val_loss": float("inf")},
        {"loss": np.float32(0.5), "count": np.int64(3), "shape": np.zeros((2, 3))},
        {"api_token": "tok-secret", "url": "https://user:pw@host/x", "big": 2**70},
    ]
    for batch, logs in enumerate(rows):
        logger._emit("on_test_batch_end", "test", batch, logs)
    logger.close()
    got = [e["logs"] for e in read_events(tmp_path / "events.jsonl")]
    assert got[0] == {"loss": 0.25, "accuracy": 0.5}
    assert got[1] == {"loss": "nan", "val_loss": "inf"}
    assert got[2] == {"loss": 0.5, "count": 3, "shape": {"shape": [2, 3]}}
    assert got[3]["api_token"] == "***" and "pw" not in got[3]["url"]
    assert got[3]["big"] == 2**70
