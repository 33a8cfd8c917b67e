"""Progress: one plain line per epoch when stdout is not a terminal; rich bars when forced."""

from __future__ import annotations

import re

from callbacks.progress import Progress
from tests.callbacks.cb_testing import ModelPool, batches, regression_data
from trainkit.context import RunContext

# One model, reset before each run (its train, test and predict functions traced once); the
# data as a dataset of 4 batches of 8 for fit, validation and evaluate, arrays for predict.
MODELS = ModelPool()
X, Y = regression_data(32)
DATA = batches(X, Y)


def run(progress):
    model = MODELS.get()
    fit = {"shuffle": False, "verbose": 0, "callbacks": [progress]}
    model.fit(DATA, epochs=3, validation_data=DATA, **fit)
    model.evaluate(DATA, verbose=0, callbacks=[progress])
    model.predict(X, batch_size=16, verbose=0, callbacks=[progress])
    progress.on_job_end("FINISHED")


def test_plain_mode_prints_one_line_per_epoch(capsys, tmp_path):
    progress = Progress()  # auto: pytest's captured stdout is not a terminal
    progress.set_context(RunContext(run_dir=tmp_path, batch_size=8))
    run(progress)
    lines = capsys.readouterr().out.splitlines()
    epochs = [line for line in lines if line.startswith("Epoch ")]
    assert len(epochs) == 3
    for number, line in enumerate(epochs, start=1):
        assert re.match(rf"Epoch {number}/3 - 4 steps - [\d.]+s - [\d,]+ samples/s - ", line)
        assert "loss: " in line and "val_loss: " in line
    assert [line.split(" - ")[:2] for line in lines if not line.startswith("Epoch ")] == [
        ["Test", "4 steps"],
        ["Predict", "2 steps"],
    ]
    assert not any("\x1b[" in line for line in lines)  # no terminal control codes


def test_without_batch_size_it_shows_steps_per_second(capsys):
    run(Progress(mode="plain"))
    first = capsys.readouterr().out.splitlines()[0]
    assert "steps/s" in first and "samples/s" not in first


def test_rich_mode_draws_bars(capsys):
    run(Progress(mode="rich", refresh_per_second=1000))
    out = capsys.readouterr().out
    assert "\x1b[" in out  # a live terminal display
    assert "Epoch 3/3 - 4 steps" in out and "Test - 4 steps" in out and "Predict - 2" in out
    assert "━" in out  # the bars
