"""The stack leaves chief-only callbacks out on workers that are not the chief."""

from __future__ import annotations

from pathlib import Path

import pytest

from callbacks.base import TrainkitCallback
from callbacks.checkpoint import Checkpoint
from callbacks.hook_logger import HookLogger
from callbacks.hook_profiler import HookProfiler
from callbacks.mlflow import MLflowLogger
from callbacks.tensorboard import TensorBoardLogger
from trainkit.context import RunContext
from trainkit.stack import build_stack


class Counts(TrainkitCallback):
    def __init__(self, chief_only: bool) -> None:
        super().__init__()
        self.chief_only = chief_only
        self.batches = 0

    def on_train_batch_end(self, batch, logs=None) -> None:
        self.batches += 1


def test_every_writing_callback_of_the_library_is_chief_only() -> None:
    for cls in (MLflowLogger, TensorBoardLogger, Checkpoint, HookLogger, HookProfiler):
        assert cls.chief_only, cls.__name__
    assert not TrainkitCallback.chief_only


@pytest.mark.parametrize("is_chief", [True, False])
def test_stack_calls_chief_only_callbacks_on_the_chief_only(
    tmp_path: Path, is_chief: bool, tiny_model, tiny_data
) -> None:
    writer, everyone = Counts(chief_only=True), Counts(chief_only=False)
    context = RunContext(run_dir=tmp_path, is_chief=is_chief, worker_index=0 if is_chief else 1)
    model = tiny_model()
    stack = build_stack([writer, everyone], context, model)
    x, y = tiny_data(32)
    model.fit(x, y, batch_size=8, epochs=1, callbacks=stack.for_fit(1, 4), verbose=0)
    assert everyone.batches == 4
    assert writer.batches == (4 if is_chief else 0)
    assert (writer in context.callbacks) is is_chief
    assert stack.skipped == ([] if is_chief else [writer])
