"""MLflow holds what was evaluated: the logged model is the model behind ``test_*``, it loads in a
Python that never imported trainkit, and the best checkpoint is not uploaded twice.

That Python is a :class:`tests.preloaded.Popen` process: forked from one that imported
TensorFlow, Keras and MLflow (never trainkit; the test checks its ``sys.modules``), with the
loader's own ``sys.path``, environment and working directory, so the ~12 s of CPU those
imports cost are not paid again for it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
from mlflow import MlflowClient

from callbacks.checkpoint import Checkpoint
from callbacks.early_stopping import EarlyStopping
from callbacks.mlflow import MLflowLogger
from tests import preloaded
from tests.tracking.helpers import CLASSES, datasets, make_context, run_job
from trainkit.models.blocks import FixedGridAveragePool
from trainkit.models.preprocessing import Preprocess

# Loads the logged model with both MLflow APIs, as a user would, and predicts.
LOADER = """
import json, sys
import numpy as np
import mlflow, mlflow.keras, mlflow.pyfunc

uri, x_path, out_path = sys.argv[1:4]
x = np.load(x_path)
loaded = mlflow.keras.load_model(uri)  # keep it: serve needs its variables alive
with_keras = np.asarray(loaded.serve(x))
with_pyfunc = np.asarray(mlflow.pyfunc.load_model(uri).predict(x))
np.savez(out_path, keras=with_keras, pyfunc=with_pyfunc)
print(json.dumps({"trainkit_imported": any(m.split(".")[0] in ("trainkit", "callbacks")
                                          for m in sys.modules)}))
"""


def zoo_like_model() -> keras.Model:
    """Small, but with trainkit's own layers, as every zoo model has (``Preprocess`` first)."""
    keras.utils.set_random_seed(1)
    inputs = keras.Input((8, 8, 3))
    x = Preprocess("tf")(inputs)
    x = keras.layers.Conv2D(6, 3, activation="relu", padding="same")(x)
    x = FixedGridAveragePool(2)(x)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(len(CLASSES), activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    model.compile(
        optimizer=keras.optimizers.Adam(3e-2),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def load_in_fresh_python(uri: str, tracking_uri: str, x: np.ndarray, tmp: Path) -> dict:
    """Both loaders in another process that never imported trainkit: a script outside the
    repository, run there, no PYTHONPATH."""
    cwd = tmp / "elsewhere"
    cwd.mkdir(exist_ok=True)
    np.save(cwd / "x.npy", x)
    (cwd / "load_logged_model.py").write_text(LOADER)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["MLFLOW_TRACKING_URI"] = tracking_uri
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    with preloaded.Popen(
        [sys.executable, str(cwd / "load_logged_model.py"), uri, "x.npy", "out.npz"],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        try:
            stdout, stderr = process.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    assert process.returncode == 0, stderr[-3000:]
    report = json.loads(stdout.strip().splitlines()[-1])
    outputs = np.load(cwd / "out.npz")
    return {"trainkit_imported": report["trainkit_imported"], **outputs}


def artifact_paths(client: MlflowClient, run_id: str, path: str | None = None) -> set[str]:
    found = set()
    for item in client.list_artifacts(run_id, path):
        found |= artifact_paths(client, run_id, item.path) if item.is_dir else {item.path}
    return found


@pytest.mark.slow
def test_the_logged_model_is_the_restored_best_and_loads_without_trainkit(
    tmp_path: Path, arrays: Any
) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    context = make_context(tmp_path / "run", uri, arrays, log_model=True)
    context.precision = "float32"
    logger = MLflowLogger(flush_interval=0.5)
    # min_delta=10: no later epoch counts as better, so it stops after epoch 2 and restores
    # epoch 1's weights; the checkpoint keeps the lowest val_loss, a later epoch.
    stopper = EarlyStopping(monitor="val_loss", patience=1, min_delta=10, restore_best_weights=True)
    checkpoint = Checkpoint(monitor="val_accuracy", save_last=True)
    # The logger is placed first, as in the stacks: before the callbacks that change the model.
    done = run_job(context, [logger, stopper, checkpoint], arrays, epochs=3, model=zoo_like_model())
    assert done.status == "FINISHED"
    assert stopper.stopped_epoch == 1 and stopper.best_epoch == 0

    client = MlflowClient(uri)
    run = client.get_run(logger.run.run_id)
    model_uri = run.data.tags["trainkit.model_uri"]
    _, val = datasets(arrays)
    x = np.concatenate([batch[0].numpy() for batch in val])
    y = np.concatenate([batch[1].numpy() for batch in val])

    loaded = load_in_fresh_python(model_uri, uri, x, tmp_path)
    assert loaded["trainkit_imported"] is False
    evaluated = done.model.predict(x, verbose=0)  # the weights evaluate() measured
    np.testing.assert_allclose(loaded["keras"], evaluated, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(loaded["pyfunc"], evaluated, rtol=1e-5, atol=1e-6)
    accuracy = float(np.mean(loaded["keras"].argmax(axis=1) == y))
    assert run.data.metrics["test_accuracy"] == pytest.approx(accuracy)
    # ... and not the last epoch's weights
    last = keras.saving.load_model(checkpoint.last_model_path)
    assert not np.allclose(last.predict(x, verbose=0), evaluated, atol=1e-4)

    # The checkpoint's best epoch is another one: it is uploaded, and said to be another model.
    assert "trainkit.best_checkpoint" not in run.data.tags
    assert any(p.startswith("checkpoints/") for p in artifact_paths(client, run.info.run_id))

    # The small ones: the full summary, what the job resolved.
    summary = Path(client.download_artifacts(run.info.run_id, "model_summary.txt")).read_text()
    assert "Param #" in summary
    assert "FixedGridAveragePool" in summary
    dense = next(line for line in summary.splitlines() if "(Dense)" in line)
    assert dense.split()[-1] == f"{done.model.layers[-1].count_params():,}"
    assert f"Total params: {done.model.count_params():,}" in summary
    assert run.data.params["run.precision"] == "float32"
    assert run.data.params["run.strategy"] == "default"


@pytest.mark.slow
def test_best_checkpoint_and_logged_model_are_one_copy_when_the_monitors_agree(
    tmp_path: Path, arrays: Any
) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    context = make_context(tmp_path / "run", uri, arrays, log_model=True)
    logger = MLflowLogger(flush_interval=0.5)
    stopper = EarlyStopping(monitor="val_loss", patience=5, restore_best_weights=True)
    checkpoint = Checkpoint(monitor="val_loss", save_last=True)
    done = run_job(context, [logger, stopper, checkpoint], arrays, epochs=3, model=zoo_like_model())
    assert done.status == "FINISHED"
    client = MlflowClient(uri)
    run = client.get_run(logger.run.run_id)
    model_uri = run.data.tags["trainkit.model_uri"]
    assert run.data.tags["trainkit.best_checkpoint"].startswith(model_uri)
    assert not any(p.startswith("checkpoints/") for p in artifact_paths(client, run.info.run_id))

    import mlflow.pyfunc

    from trainkit.tracking.store import global_tracking_uri

    x = arrays[0][:6]
    best = keras.saving.load_model(checkpoint.best_model_path)
    with global_tracking_uri(uri):
        logged = mlflow.pyfunc.load_model(model_uri)
    np.testing.assert_allclose(
        np.asarray(logged.predict(x)), best.predict(x, verbose=0), rtol=1e-5, atol=1e-6
    )
