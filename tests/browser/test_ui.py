"""What a user sees, read from the rendered pages of a real browser.

A finished run (the tracking tests' tiny job: real Keras training through the real MLflow and
TensorBoard callbacks) is opened in ``mlflow ui`` and ``tensorboard`` on 127.0.0.1, in a headless
Chromium driven through the DevTools protocol (``docs/screenshots.py``). The assertions read the
page's text after JavaScript ran, shadow roots included: what a user would read, not the
servers' JSON. Needs Debian's ``chromium``; ``.ci/run`` installs it.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from mlflow import MlflowClient

from docs.screenshots import (
    MLFLOW_FIRST_VISIT,
    Browser,
    browser,
    chromium_path,
    mlflow_ui,
    tensorboard,
)
from tests import preloaded

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(chromium_path() is None, reason="needs chromium (apt-get install chromium)"),
]

TRAINING_VIEW = "?workflowType=machine_learning"


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A finished run, with ``mlflow ui`` and ``tensorboard`` serving it."""
    from callbacks.mlflow import MLflowLogger
    from callbacks.tensorboard import TensorBoardLogger
    from callbacks.timing import Timing
    from tests.tracking.helpers import make_context, run_job

    tmp = tmp_path_factory.mktemp("browser")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    MlflowClient(uri).search_experiments()  # the store's tables, before the server reads it
    ui = mlflow_ui(uri, tmp / "mlflow-ui.log").start()  # boots (slowly) while the job trains
    run_dir = tmp / "run"
    board = tensorboard(run_dir / "tensorboard", tmp / "tensorboard.log")
    board.command[-1] = "1"  # reload every second: the event files appear after it starts
    # the installed script's tensorboard.main, forked from the preloaded interpreter: its own
    # start imports TensorFlow (8-10 s of CPU here)
    board.command[:1] = [sys.executable, "-m", "tensorboard.main"]
    board.launcher = preloaded.Popen
    board.start()
    try:
        arrays = _arrays()
        context = make_context(run_dir, uri, arrays)
        logger = MLflowLogger(flush_interval=0.5)
        # Timing writes step_time and the like, which MLflow files under system/.
        job = run_job(context, [Timing(), logger, TensorBoardLogger()], arrays)
        assert job.status == "FINISHED"
        run = MlflowClient(uri).get_run(logger.run.run_id)
        ui.wait("/health")
        board.wait()
        from trainkit.job import run_page as printed_page

        # The link the job prints at its end, for this UI.
        link = printed_page(run_dir, uri, ui.url)
        yield {"run": run, "mlflow": ui.url, "tensorboard": board.url, "link": link}
    finally:
        ui.stop()
        board.stop()


def _arrays():
    import numpy as np

    from tests.tracking.helpers import BATCH, CLASSES, STEPS

    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (STEPS * BATCH, 8, 8, 3)).astype("float32")
    return x, rng.integers(0, len(CLASSES), STEPS * BATCH)


@pytest.fixture(scope="module")
def chromium(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    with browser(tmp_path_factory.mktemp("chromium")) as driver:
        driver.before_each_page(MLFLOW_FIRST_VISIT)
        yield driver


def run_page(finished: dict[str, Any], tab: str = "") -> str:
    run = finished["run"]
    page = f"{finished['mlflow']}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"
    return f"{page}{tab}{TRAINING_VIEW}"


def test_mlflow_run_page_shows_the_name_the_description_and_a_loss_chart(finished, chromium):
    name = finished["run"].info.run_name
    assert name.startswith("tiny-test-")  # model-stack-time, not a random pair of words
    assert finished["link"] == run_page(finished)  # what the job prints opens this page
    chromium.open(finished["link"])
    text = chromium.wait_for_text(name, "Description", "Trained tiny")
    assert "Model training" in text
    chromium.open(run_page(finished, "/model-metrics"))
    # A drawn chart's legend reads "<run name> (<metric>)".
    text = chromium.wait_for_text(f"{name} (loss)", f"{name} (accuracy)")
    assert "predict_class" not in text  # per-class counts are an artifact, not ten charts


@contextlib.contextmanager
def tall(chromium: Browser) -> Iterator[None]:
    """A window tall enough for every chart of a tab: MLflow draws only the cards in view."""
    chromium.viewport(height=1600)
    try:
        yield
    finally:
        chromium.viewport()


MACHINE = ("step_time", "samples_per_sec", "epoch_time", "predict_latency_s")


def test_mlflow_model_metrics_tab_shows_the_model_not_the_machine(finished, chromium):
    name = finished["run"].info.run_name
    with tall(chromium):
        chromium.open(run_page(finished, "/model-metrics"))
        model = ("loss", "accuracy", "val_loss", "val_accuracy", "lr", "test_loss")
        text = chromium.wait_for_text("Model metrics", *(f"{name} ({key})" for key in model))
    shown = [key for key in MACHINE if key in text]
    assert not shown, f"the Model metrics tab charts {shown}"


def test_mlflow_system_metrics_tab_shows_the_timings_against_time(finished, chromium):
    name = finished["run"].info.run_name
    with tall(chromium):
        chromium.open(run_page(finished, "/system-metrics"))
        # Titled without the prefix ("step_time"), the legend gives the key.
        text = chromium.wait_for_text(
            "System metrics", *(f"{name} (system/{key})" for key in MACHINE)
        )
    assert f"{name} (loss)" not in text and f"{name} (accuracy)" not in text
    # MLflow charts every system/ key against wall-clock time, not the step.
    assert "Time" in text and "Step" not in text


def test_mlflow_artifacts_tab_lists_what_the_run_wrote(finished, chromium):
    chromium.open(run_page(finished, "/artifacts"))
    chromium.wait_for_text(
        finished["run"].info.run_name,
        "predict_class_counts.json",
        "config.yaml",
        "model_summary.txt",
        "plots",
    )


def test_mlflow_runs_list_shows_the_run_in_the_training_view(finished, chromium):
    run = finished["run"]
    chromium.open(f"{finished['mlflow']}/#/experiments/{run.info.experiment_id}{TRAINING_VIEW}")
    text = chromium.wait_for_text(run.info.run_name, "Run Name")
    assert "Traces" in text and "Runs" in text


def test_tensorboard_shows_the_scalar_tags(finished, chromium):
    chromium.open(f"{finished['tensorboard']}/#timeseries")
    chromium.wait_for_text("epoch_loss", "epoch_accuracy", "batch_loss", "validation")


def test_tensorboard_hparams_table_lists_the_job(finished, chromium):
    chromium.open(f"{finished['tensorboard']}/#hparams")
    text = chromium.wait_for_text("trainer.epochs", "model.name")
    assert "tiny" in text  # the value of model.name in the job's row
