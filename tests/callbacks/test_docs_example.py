"""The guide's example callback (docs/examples/my_callbacks.py) works as the guide says."""

from __future__ import annotations

import csv
import importlib
import sys
from pathlib import Path

from callbacks.lr_schedule import LRSchedule
from tests.callbacks.cb_testing import Recorder, make_model, regression_data
from trainkit.context import RunContext

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"


def load_example():
    sys.path.insert(0, str(EXAMPLES))
    try:
        return importlib.import_module("my_callbacks")
    finally:
        sys.path.remove(str(EXAMPLES))


def test_batch_loss_csv(tmp_path):
    module = load_example()
    x, y = regression_data(40)  # 5 steps an epoch
    mine = module.BatchLossCSV(every=2)
    mine.set_context(RunContext(run_dir=tmp_path))
    recorder = Recorder()
    callbacks = [LRSchedule("constant", lr=0.01), mine, recorder]
    make_model().fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=callbacks)
    mine.on_job_end("FINISHED")
    with open(tmp_path / "batch_loss.csv") as file:
        rows = list(csv.DictReader(file))
    assert [(r["epoch"], r["step"]) for r in rows] == [
        ("0", "2"),
        ("0", "4"),
        ("1", "6"),
        ("1", "8"),
        ("1", "10"),
    ]
    assert all(float(r["lr"]) == 0.01 and float(r["loss"]) > 0 for r in rows)
    assert [logs["batch_loss_rows"] for logs in recorder.epoch_logs] == [2.0, 3.0]
