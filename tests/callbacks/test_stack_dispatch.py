"""The stack's batch dispatch: only overridden hooks, legacy names honoured, inline on CPUs,
Keras's log conversion kept, and the hook profiler timed by the stack's own loop."""

from __future__ import annotations

import threading

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras.src.utils.python_utils import pythonify_logs

from callbacks.hook_profiler import HookProfiler, timing_cost
from trainkit.context import JobStatus, RunContext
from trainkit.stack import _pythonify, build_stack


class Legacy(keras.callbacks.Callback):
    """Overrides only Keras 2's on_batch_begin / on_batch_end."""

    def __init__(self) -> None:
        super().__init__()
        self.begins: list[int] = []
        self.ends: list[tuple[int, float]] = []

    def on_batch_begin(self, batch, logs=None):
        self.begins.append(batch)

    def on_batch_end(self, batch, logs=None):
        self.ends.append((batch, logs["loss"]))


class AsyncSafe(keras.callbacks.Callback):
    async_safe = True

    def __init__(self) -> None:
        super().__init__()
        self.threads: set[str] = set()

    def on_train_batch_end(self, batch, logs=None):
        self.threads.add(threading.current_thread().name)


def fit(tmp_path, callbacks, tiny_model, tiny_data, epochs=1):
    x, y = tiny_data(32)
    model = tiny_model()
    stack = build_stack(callbacks, RunContext(run_dir=tmp_path), model)
    model.fit(x, y, batch_size=8, epochs=epochs, callbacks=stack.for_fit(epochs, 4), verbose=0)
    stack.end_job(JobStatus.FINISHED)
    return stack


def test_legacy_batch_hooks_are_called_every_step(tmp_path, tiny_model, tiny_data):
    legacy = Legacy()
    stack = fit(tmp_path, [legacy], tiny_model, tiny_data, epochs=2)
    assert legacy.begins == [0, 1, 2, 3] * 2
    assert [b for b, _ in legacy.ends] == [0, 1, 2, 3] * 2
    assert all(isinstance(loss, float) for _, loss in legacy.ends)
    # History has no batch hooks: the stack does not call its no-op defaults
    called = [hook.__self__ for hook in stack._batch_hooks["on_train_batch_end"]]
    assert legacy in called and not any(isinstance(cb, keras.callbacks.History) for cb in called)
    assert stack._batch_hooks["on_train_batch_begin"] == (legacy.on_train_batch_begin,)


def test_batch_hooks_run_inline_on_the_training_thread_on_a_cpu(tmp_path, tiny_model, tiny_data):
    if tf.config.list_logical_devices("GPU"):
        pytest.skip("a GPU is visible: Keras's async dispatch is kept there")
    safe = AsyncSafe()
    fit(tmp_path, [safe], tiny_model, tiny_data)
    assert safe.threads == {threading.current_thread().name}


@pytest.mark.parametrize(
    "logs",
    [
        {"loss": tf.constant(0.5), "accuracy": tf.constant(0.25), "n": 3, "ok": True},
        {"b": 1.5, "a": np.float32(2.0), "c": np.array([4.0])},
        {"outer": {"x": tf.constant(1.0)}, "y": tf.constant(2.0)},
        {"outputs": np.zeros((2, 3)), "loss": tf.constant(1.0)},
        {"name": "abc", "v": tf.constant(3.0)},
        None,
        {},
    ],
)
def test_log_conversion_matches_keras(logs):
    assert _pythonify(logs) == pythonify_logs(logs) or (
        str(_pythonify(logs)) == str(pythonify_logs(logs))  # arrays compare elementwise
    )
    assert list(_pythonify(logs)) == list(pythonify_logs(logs))  # the same key order


def test_the_profiler_counts_batch_hooks_timed_by_the_stack(tmp_path, tiny_model, tiny_data):
    profiler = HookProfiler(print_table=False)
    stack = fit(tmp_path, [profiler, AsyncSafe()], tiny_model, tiny_data, epochs=2)
    stats = profiler.summary()["callbacks"]["AsyncSafe"]["on_train_batch_end"]
    assert stats["calls"] == 8 and stats["total_s"] > 0 and stats["max_s"] > 0
    # timed in the stack's loop: it calls the callback's own method, not the wrapper
    hooks = stack._batch_hooks["on_train_batch_end"]
    assert any(stats is not None for _, stats in hooks.pairs)
    assert 0 <= timing_cost() < 5e-6  # one clock read and three list updates
    assert profiler.summary()["profiler_overhead_s"] >= 0


def test_hooks_idle_under_their_options_are_not_called(tmp_path, tiny_model, tiny_data, capsys):
    """A step calls only the batch hooks that have work under the callbacks' options; what
    those callbacks write is the same either way."""

    from callbacks.backup import Backup
    from callbacks.checkpoint import Checkpoint
    from callbacks.progress import Progress

    def bound(stack, hook):
        hooks = stack._batch_hooks[hook]
        methods = [m for m, _ in hooks.pairs] if hasattr(hooks, "pairs") else list(hooks)
        return {type(m.__self__).__name__ for m in methods}

    idle = [Progress(mode="plain"), Checkpoint(save_top_k=0), Backup(verbose=0)]
    stack = fit(tmp_path / "idle", idle, tiny_model, tiny_data, epochs=2)
    # without a live display, step files or saves every N steps, no call a step from these
    assert bound(stack, "on_train_batch_begin") == set()
    assert bound(stack, "on_train_batch_end") == {"Backup"}  # where a signal stops the job
    assert stack._after_batch == ()
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("Epoch")]
    assert len(lines) == 2 and all(" - 4 steps - " in line and "/s - " in line for line in lines)
    assert (tmp_path / "idle" / "checkpoints" / "last.keras").exists()

    busy = [
        Progress(mode="plain"),
        Checkpoint(save_top_k=0, every_n_steps=3),
        Backup(save_every_n_steps=3, verbose=0),
    ]
    stack = fit(tmp_path / "busy", busy, tiny_model, tiny_data, epochs=2)
    assert bound(stack, "on_train_batch_end") == {"Checkpoint", "Backup"}
    assert [hook.__self__ for hook in stack._after_batch] == [busy[2]]
    steps = sorted(p.name for p in (tmp_path / "busy" / "checkpoints").glob("step=*"))
    assert steps == ["step=00000003.keras", "step=00000006.keras"]
