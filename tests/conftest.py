"""Shared fixtures: composed configs, tiny Keras models, and a real job run."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MPLBACKEND", "Agg")
# One thread per TensorFlow op, in the test workers and every job they start (the variables are
# inherited, and read when a process's runtime starts, after a preloaded fork too): the suite
# already runs one worker per core, each often beside a job process, and ops split over threads
# that wait for a core finish last. tests/models/test_training.py on 2 workers took 65-86 s so
# against 95-101 s with TensorFlow's default of one thread per core, beside other work.
# (Ops that run side by side, a mirrored strategy's replicas, keep their inter-op threads.)
os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")

import sys  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import TYPE_CHECKING  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from hydra.core.global_hydra import GlobalHydra  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from omegaconf import DictConfig, open_dict  # noqa: E402

from trainkit.deferred_imports import defer_unused_imports  # noqa: E402

defer_unused_imports()  # as run.py does: Keras's unused imports wait for their first use

# Keras (TensorFlow, 8 s) is imported by the fixtures that use it, not here: pytest-xdist's
# controller process loads this file too, and runs no test.
if TYPE_CHECKING:
    import keras

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = ROOT / "conf"

# Overrides that shrink any job to seconds: a few digits at a small size, one epoch of 3 steps,
# the default AlexNet with FC layers of 256 instead of 4096 (3.9 M parameters instead of 21.6 M
# at 67 px: each backup with Adam's state is 47 MB instead of 260, a graph-mode job a quarter
# faster), for the tests whose subject is the job, not the model. The precision is pinned so
# results do not depend on whether this CPU has bf16 units (precision=auto).
TINY = [
    "trainer.precision=float32",
    "data.limit=48",
    "data.image_size=67",
    "trainer.epochs=1",
    "trainer.batch_size=16",
    "tracking.log_model=false",
    "model.options.fc_units=256",
]


def compose_config(overrides: list[str], run_dir: Path | None = None) -> DictConfig:
    """Compose ``conf/config.yaml`` as run.py does; with ``run_dir``, ready for the job."""
    from trainkit.config.schema import register

    register()  # the typed schemas conf/config.yaml names (run.py does the same)
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=overrides, return_hydra_config=run_dir is not None)
    if run_dir is not None:
        # The job reads the chosen options (callbacks=full) from HydraConfig, as under run.py.
        HydraConfig.instance().set_config(cfg)
        with open_dict(cfg):
            cfg.paths.output_dir = str(run_dir)
            del cfg["hydra"]
    return cfg


@pytest.fixture
def compose_cfg() -> Callable[..., DictConfig]:
    return compose_config


@pytest.fixture
def tiny_model() -> Callable[..., keras.Model]:
    """A compiled 8x8x3 -> n-class convnet that trains in milliseconds."""

    import keras

    def make(num_classes: int = 3, steps_per_execution: int = 1) -> keras.Model:
        model = keras.Sequential(
            [
                keras.Input((8, 8, 3)),
                keras.layers.Conv2D(4, 3, activation="relu"),
                keras.layers.GlobalAveragePooling2D(),
                keras.layers.Dense(num_classes, activation="softmax"),
            ]
        )
        model.compile(
            "adam",
            "sparse_categorical_crossentropy",
            metrics=["accuracy"],
            steps_per_execution=steps_per_execution,
        )
        return model

    return make


@pytest.fixture
def tiny_data() -> Callable[..., tuple[np.ndarray, np.ndarray]]:
    def make(n: int = 40, num_classes: int = 3, seed: int = 0):
        rng = np.random.default_rng(seed)
        return rng.random((n, 8, 8, 3), dtype=np.float32), rng.integers(0, num_classes, n)

    return make


@pytest.fixture(autouse=True)
def _float32_policy() -> Iterator[None]:
    """Tests that switch to mixed precision must not leak it into the next test."""
    yield
    keras = sys.modules.get("keras")
    if keras is not None:
        keras.mixed_precision.set_global_policy("float32")


# The costliest files first, so that the last file a worker starts is a short one: each file
# runs on one worker (--dist loadfile) and pytest-xdist's own order (most tests first) started
# the multi-worker and sweep files, ~100 s each, among the last. Worker-seconds (slow part, then
# fast subset) of two fresh-clone runs, 2026-11-28 10:29 and 12:56 UTC (tests/run_suite.py with
# TRAINKIT_SUITE_REPORTS), the larger of the two; the other files keep their order.
LONGEST_FIRST = (
    "tests/test_docs_commands.py",  # 201
    "tests/distribute/test_multi_worker.py",  # 95
    "tests/distribute/test_sweeps.py",  # 78
    "tests/models/test_training.py",  # 77 (109 before two models were built only)
    "tests/models/test_weights.py",  # 83
    "tests/test_job_flows.py",  # 72
    "tests/test_signals.py",  # 69
    "tests/browser/test_ui.py",  # 62
    "tests/distribute/test_server.py",  # 51
    "tests/tracking/test_mlflow_logger.py",  # 45 slow, 28 fast
    "tests/distribute/test_mirrored.py",  # 38
    "tests/test_errors.py",  # 24 slow, 30 fast
    "tests/models/test_every_model_job.py",  # 29
    "tests/tracking/test_auth_and_system_metrics.py",  # 28
    "tests/test_resume.py",  # 25
    "tests/tracking/test_ui_tracking.py",  # 23
    "tests/models/test_inception_v1.py",  # 18 slow, 5 fast
    "tests/test_config.py",  # 20 fast
    "tests/test_cli.py",  # 12
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    rank = {path: i for i, path in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))
