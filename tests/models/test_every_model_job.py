"""``python run.py model=<name> data.image_size=<small> trainer.epochs=1`` through the job.

In-process through the real job on composed configs (the CLI itself is covered once in
tests/test_cli.py): build, compile, fit one small epoch, evaluate, predict, in float32.

One model per way the job can differ between models, not all 14 (a job of the largest costs
a minute here, and the suite has a budget): a custom network (``alexnet``), one with auxiliary
training heads (``inception_v1``), a ``keras.applications`` backbone with Caffe preprocessing
(``resnet50``) and a CLIP encoder with its own preprocessing and attention pooling
(``clip_resnet50``). What differs between the others is the network itself, and every one of
the 14 builds, preprocesses and trains a step at its minimum input in
``tests/models/test_training.py``; each has its config file, checked against its builder in
``tests/models/test_configs.py``.
"""

from __future__ import annotations

import json
import math

import pytest

from tests.conftest import compose_config
from trainkit import job
from trainkit.models import available_models, get_spec

# a job epoch of a model: 5-30 s each: not in the fast subset.
pytestmark = pytest.mark.slow

FAMILIES = ("alexnet", "inception_v1", "resnet50", "clip_resnet50")


def test_the_chosen_models_span_the_families_and_preprocessings():
    specs = [get_spec(name) for name in FAMILIES]
    every = [get_spec(name) for name in available_models()]
    assert {s.preprocessing for s in specs} == {s.preprocessing for s in every}
    assert {"alexnet", "applications", "clip_resnet", "inception_v1"} <= {s.family for s in specs}


@pytest.mark.parametrize("name", FAMILIES)
def test_one_epoch_job_runs_for_every_model(tmp_path, name):
    size = get_spec(name).min_size
    cfg = compose_config(
        [
            f"model={name}",
            f"data.image_size={size}",
            # one step of 8 (validation and test keep an image or two): an eager step of
            # ResNet50 costs ~7 s of CPU here, and a second one shows nothing the first did not
            "data.limit=8",
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
