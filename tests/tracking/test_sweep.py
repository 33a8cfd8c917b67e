"""A real Hydra multirun of two jobs: one parent run for the sweep, one child run per job."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

ROOT = Path(__file__).resolve().parents[2]

APP = """
import hydra
import keras
import numpy as np
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from callbacks.mlflow import MLflowLogger
from trainkit.context import RunContext


@hydra.main(config_path="conf", config_name="cfg", version_base=None)
def main(cfg):
    run_dir = HydraConfig.get().runtime.output_dir
    context = RunContext(
        run_dir=run_dir,
        config=OmegaConf.to_container(cfg, resolve=True),
        model_name="tiny",
        stack="sweep-test",
        tracking={"uri": cfg.uri, "experiment": "sweep-test", "log_model": False},
    )
    logger = MLflowLogger()
    logger.set_context(context)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    model.compile(keras.optimizers.SGD(cfg.lr), "sparse_categorical_crossentropy")
    x = np.random.default_rng(0).normal(size=(16, 4)).astype("float32")
    y = (x[:, 0] > 0).astype("int64")
    status = "FAILED"
    try:
        model.fit(x, y, batch_size=8, epochs=1, callbacks=[logger], verbose=0)
        status = "FINISHED"
    finally:
        logger.on_job_end(status)


main()
"""

CONFIG = """
lr: 0.1
uri: {uri}
hydra:
  sweep:
    dir: {sweep_dir}
    subdir: ${{hydra.job.num}}
"""


pytestmark = pytest.mark.slow  # a Hydra multirun of two jobs through run.py


def test_a_multirun_gets_one_parent_and_a_child_per_job(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "multirun" / "2030-01-01" / "12-00-00"
    (tmp_path / "conf").mkdir()
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    (tmp_path / "conf" / "cfg.yaml").write_text(CONFIG.format(sweep_dir=sweep_dir, uri=uri))
    (tmp_path / "app.py").write_text(APP)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run(
        [sys.executable, "app.py", "-m", "lr=0.1,0.2"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("sweep-test")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get("trainkit.role") == "sweep"]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and len(children) == 2 and len(runs) == 3
    parent = parents[0]
    assert parent.data.tags["trainkit.sweep_dir"] == str(sweep_dir.resolve())
    assert parent.info.status == "FINISHED"
    assert parent.info.run_name == "sweep 2030-01-01/12-00-00"
    assert (sweep_dir / "mlflow_parent_run_id").read_text().strip() == parent.info.run_id

    by_job = {r.data.tags["trainkit.job_num"]: r for r in children}
    assert set(by_job) == {"0", "1"}
    for num, lr in (("0", "0.1"), ("1", "0.2")):
        child = by_job[num]
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert child.data.params["lr"] == lr
        assert child.info.status == "FINISHED"
        assert child.info.run_name == f"#{num} lr={lr}"
        history = client.get_metric_history(child.info.run_id, "loss")
        assert [m.step for m in history] == [1, 2]
        # each job keeps its own run id in its own run directory
        assert (sweep_dir / num / "mlflow_run_id").read_text().strip() == child.info.run_id
