"""Multiruns on real launchers: joblib (parallel processes), submitit's local executor, Optuna.

Each job is a child MLflow run of one parent run for the sweep, and writes the TensorBoard
HParams summary that lets the HParams tab compare the jobs.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.distribute.helpers import TINY, mlflow_runs, run_job

# Subprocess jobs with their own kill timeouts; on a loaded machine they take minutes.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

SWEEP = [
    *TINY,
    "callbacks=minimal",
    "+callbacks.tensorboard._target_=callbacks.tensorboard.TensorBoardLogger",
]


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
    sweep_dir = tmp_path / "multirun"
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
    _, children = _parent_and_children(tmp_path / "mlflow.db", 2)
    assert sorted(c.data.params["optimizer.learning_rate"] for c in children) == [
        "0.0001",
        "0.0003",
    ]
    _hparams_logged(sweep_dir, 2)


def test_submitit_local_launcher(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "multirun"
    run_job(
        tmp_path,
        ["-m", *SWEEP, "hydra/launcher=local", "trainer.seed=1,2", f"hydra.sweep.dir={sweep_dir}"],
        timeout=600,
    )
    _, children = _parent_and_children(tmp_path / "mlflow.db", 2)
    assert sorted(c.data.params["trainer.seed"] for c in children) == ["1", "2"]
    assert list((sweep_dir / ".submitit").iterdir())  # the jobs went through submitit


def test_optuna_runs_three_trials_on_the_returned_metric(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "multirun"
    out, _ = run_job(
        tmp_path,
        [
            *SWEEP,
            "hparams_search=optuna",
            "hydra.sweeper.n_trials=3",
            f"hydra.sweep.dir={sweep_dir}",
        ],
        timeout=600,
    )
    parent, children = _parent_and_children(tmp_path / "mlflow.db", 3)
    assert len({c.data.params["optimizer.learning_rate"] for c in children}) == 3
    best = (sweep_dir / "optimization_results.yaml").read_text()
    assert "best_value" in best and "optimizer.learning_rate" in best
