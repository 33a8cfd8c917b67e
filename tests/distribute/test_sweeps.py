"""Multiruns on real launchers: joblib (parallel processes), submitit's local executor, Optuna.

Two sweeps: a grid on joblib, and an Optuna search whose trials run on submitit's local
executor (one sweep for the two tests of those, which each ran one of their own).

Each job is a child MLflow run of one parent run for the sweep, and writes the TensorBoard
HParams summary that lets the HParams tab compare the jobs. The joblib sweep also checks what a
multirun's runs are called and where their ids are kept (it took over the former
tests/tracking/test_sweep.py, which ran a two-job multirun of its own for that).

The jobs run eagerly (``trainer.run_eagerly=true``): what these tests prove is the launchers'
and the sweep's, not the traced train step, and tracing AlexNet costs ~4 s of CPU per job.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.conftest import TINY
from tests.distribute.helpers import mlflow_runs, run_job
from trainkit.tracking.store import PARENT_RUN_ID_FILE, ROLE_TAG, RUN_ID_FILE, SWEEP_TAG
from trainkit.tracking.sweep import OPTIMIZED_METRIC_TAG, OPTIMIZED_VALUE_TAG

# Subprocess jobs with their own kill timeouts; on a loaded machine they take minutes.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

SWEEP = [
    *TINY,
    "trainer.run_eagerly=true",
    "callbacks=minimal",
    "+callbacks.tensorboard._target_=callbacks.tensorboard.TensorBoardLogger",
]
# One step of 16 (validation shrinks to 3 images) where the test reads no step-by-step history:
# each further eager step costs ~1 s of CPU a job. The joblib sweep keeps its 3 steps: it checks
# that every step of the epoch reached MLflow.
ONE_STEP = [*(o for o in SWEEP if not o.startswith("data.limit=")), "data.limit=16"]


def _parent_and_children(db: Path, jobs: int) -> tuple[object, list]:
    runs = mlflow_runs(db)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1, [r.data.tags for r in runs]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(children) == jobs
    assert all(child.info.status == "FINISHED" for child in children)
    return parents[0], children


def _hparams_logged(sweep_dir: Path, jobs: int) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    for job in range(jobs):
        found = False
        for path in (sweep_dir / str(job) / "tensorboard").rglob("events.out.tfevents.*"):
            accumulator = EventAccumulator(str(path))
            accumulator.Reload()
            found = found or "_hparams_/session_start_info" in accumulator.summary_metadata
        assert found, f"job {job} wrote no HParams session"


def test_joblib_runs_jobs_in_parallel_as_children_of_one_run(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "multirun" / "2030-01-01" / "12-00-00"
    out, seconds = run_job(
        tmp_path,
        [
            "-m",
            *SWEEP,
            "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=2",
            "optimizer.learning_rate=1e-4,3e-4",
            f"hydra.sweep.dir={sweep_dir}",
        ],
        timeout=600,
    )
    assert "Joblib.Parallel(n_jobs=2" in out
    parent, children = _parent_and_children(tmp_path / "mlflow.db", 2)
    assert len(mlflow_runs(tmp_path / "mlflow.db")) == 3  # the parent and its two jobs
    _hparams_logged(sweep_dir, 2)

    # The parent: named after the sweep's folder, tagged with it, its id kept in the folder.
    assert parent.data.tags[ROLE_TAG] == "sweep"
    assert parent.data.tags[SWEEP_TAG] == str(sweep_dir.resolve())
    assert parent.info.status == "FINISHED"
    assert parent.info.run_name == "sweep 2030-01-01/12-00-00"
    assert (sweep_dir / PARENT_RUN_ID_FILE).read_text().strip() == parent.info.run_id

    # Each child: its job number, its overrides in its name, every step of its one epoch
    # (48 images in batches of 16), its own run id in its own job folder.
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    by_job = {c.data.tags["trainkit.job_num"]: c for c in children}
    assert set(by_job) == {"0", "1"}
    for num, lr in (("0", "0.0001"), ("1", "0.0003")):
        child = by_job[num]
        assert child.data.params["optimizer.learning_rate"] == lr
        overrides = child.data.tags["trainkit.overrides"]
        assert f"optimizer.learning_rate={lr}" in overrides.split(",")
        assert child.info.run_name == f"#{num} {overrides}"[:250]
        assert [m.step for m in client.get_metric_history(child.info.run_id, "loss")] == [1, 2, 3]
        assert (sweep_dir / num / RUN_ID_FILE).read_text().strip() == child.info.run_id


@dataclass
class Search:
    folder: Path  # the sweep's cwd: its SQLite store is mlflow.db
    sweep_dir: Path


@pytest.fixture(scope="module")
def optuna_on_submitit(tmp_path_factory: pytest.TempPathFactory) -> Search:
    """An Optuna search of two trials whose jobs go through submitit's local executor: two
    processes, read by the submitit test and the Optuna test (once two sweeps, of two jobs
    each). Both trials are asked for at once (``hydra.sweeper.n_jobs=2``), so the launcher gets
    a batch of two jobs, each with its own sampled overrides, as a grid would give it."""
    folder = tmp_path_factory.mktemp("optuna-on-submitit")
    sweep_dir = folder / "multirun"
    run_job(
        folder,
        [
            "-m",
            *ONE_STEP,
            "hparams_search=optuna",
            "hydra.sweeper.n_trials=2",
            "hydra.sweeper.n_jobs=2",
            "hydra/launcher=local",
            f"hydra.sweep.dir={sweep_dir}",
        ],
        timeout=600,
    )
    return Search(folder, sweep_dir)


def test_submitit_local_launcher(optuna_on_submitit: Search) -> None:
    _, children = _parent_and_children(optuna_on_submitit.folder / "mlflow.db", 2)
    # each job ran with its own overrides: the values Optuna sampled for it
    for child in children:
        overrides = dict(o.split("=", 1) for o in child.data.tags["trainkit.overrides"].split(","))
        lr = float(overrides["optimizer.learning_rate"])
        assert float(child.data.params["optimizer.learning_rate"]) == pytest.approx(lr)
    # the jobs went through submitit: a folder per job, named after its id (a local job's pid)
    jobs = [p.name for p in (optuna_on_submitit.sweep_dir / ".submitit").iterdir()]
    assert sum(name.isdigit() for name in jobs) == 2, jobs


def test_optuna_runs_trials_on_the_returned_metric(optuna_on_submitit: Search) -> None:
    # Two trials prove what three did: Optuna samples each trial's values, each trial is a child
    # run of the sweep, and the best of the returned metric is written.
    sweep_dir = optuna_on_submitit.sweep_dir
    parent, children = _parent_and_children(optuna_on_submitit.folder / "mlflow.db", 2)
    assert len({c.data.params["optimizer.learning_rate"] for c in children}) == 2
    best = (sweep_dir / "optimization_results.yaml").read_text()
    assert "best_value" in best and "optimizer.learning_rate" in best
    # Optuna maximized what each job returned: the best value is the best trial's val_accuracy.
    returned = [float(c.data.tags[OPTIMIZED_VALUE_TAG]) for c in children]
    assert all(c.data.tags[OPTIMIZED_METRIC_TAG] == "val_accuracy" for c in children)
    # (the tag holds 6 significant digits)
    assert yaml.safe_load(best)["best_value"] == pytest.approx(max(returned), rel=1e-5)
