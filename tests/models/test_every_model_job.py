"""``python run.py model=<each> data.image_size=<small> trainer.epochs=1`` works for every name.

In-process through the real job on composed configs (the CLI itself is covered once in
tests/test_cli.py): build, compile, fit one small epoch, evaluate, predict.
"""

from __future__ import annotations

import json
import math

import pytest

from tests.conftest import compose_config
from trainkit import job
from trainkit.models import available_models, get_spec

# one job epoch of each of the 14 models: 2-140 s each: not in the fast subset.
pytestmark = pytest.mark.slow


@pytest.mark.parametrize("name", available_models())
def test_one_epoch_job_runs_for_every_model(tmp_path, name):
    size = get_spec(name).min_size
    cfg = compose_config(
        [
            f"model={name}",
            f"data.image_size={size}",
            "data.limit=16",
            "trainer.precision=float32",
            "trainer.epochs=1",
            "trainer.batch_size=8",
            # Tracing the graphs of the big Inceptions takes a minute; one eager epoch, seconds.
            "trainer.run_eagerly=true",
            "callbacks=none",
            "+callbacks.hook_logger._target_=callbacks.hook_logger.HookLogger",
            "+callbacks.hook_logger.hooks=[on_epoch_end,on_test_end,on_predict_end]",
            f"tracking.uri=sqlite:///{tmp_path}/mlflow.db",
        ],
        run_dir=tmp_path / "run",
    )
    value = job.main(cfg)
    assert value is not None and 0.0 <= value <= 1.0
    events = [
        json.loads(line) for line in (tmp_path / "run" / "events.jsonl").read_text().splitlines()
    ]
    assert [(e["hook"], e["phase"]) for e in events] == [
        ("on_test_end", "validation"),
        ("on_epoch_end", "train"),
        ("on_test_end", "test"),
        ("on_predict_end", "predict"),
    ]
    assert math.isfinite(events[1]["logs"]["loss"])
