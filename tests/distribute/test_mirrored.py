"""trainer.strategy=mirrored over two logical CPUs with the full stack, against one device."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import TINY, compose_config
from tests.distribute.helpers import events, job_env, mlflow_runs, start_job
from trainkit import job

# Subprocess jobs with their own kill timeouts; on a loaded machine they take minutes.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def test_mirrored_over_two_cpus_matches_one_device(tmp_path: Path) -> None:
    two, one = tmp_path / "mirrored", tmp_path / "single"
    two.mkdir()
    one.mkdir()
    # The mirrored job in a subprocess: logical CPUs can only be made before TensorFlow starts.
    mirrored = start_job(
        two,
        [
            *TINY,
            "callbacks=full",
            "callbacks.hook_profiler.print_table=false",
            "trainer.strategy=mirrored",
            'trainer.devices=["/cpu:0","/cpu:1"]',
            f"hydra.run.dir={two / 'run'}",
        ],
        env=job_env(TRAINKIT_LOGICAL_CPUS="2"),
    )
    # Meanwhile the one-device reference, in this process: only its per-batch losses are read,
    # so it logs hooks and nothing else, and runs eagerly (the same arithmetic, no tracing).
    # The full stack's lr_schedule is constant and its epoch-end callbacks act after the last
    # batch of this one-epoch job: they leave the per-batch losses alone.
    single = compose_config(
        [
            *TINY,
            "callbacks=none",
            "+callbacks/entry@callbacks.hook_logger=hook_logger",
            "trainer.run_eagerly=true",
            f"tracking.uri=sqlite:///{one / 'mlflow.db'}",
        ],
        run_dir=one / "run",
    )
    job.main(single)
    code, out, _ = mirrored.wait(600)
    assert code == 0, out[-4000:]
    assert "strategy mirrored: 2 replica(s) in sync" in out

    batches = [e for e in events(two / "run") if e["hook"] == "on_train_batch_end"]
    single_batches = [e for e in events(one / "run") if e["hook"] == "on_train_batch_end"]
    # Every batch hook fires once per global step (3 steps of 16 = 8 per replica).
    assert [e["batch"] for e in batches] == [0, 1, 2]
    assert len(batches) == len(single_batches)
    for replicated, alone in zip(batches, single_batches, strict=True):
        assert replicated["logs"]["loss"] == pytest.approx(alone["logs"]["loss"], rel=0.02)

    runs = mlflow_runs(two / "mlflow.db")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert runs[0].data.params["trainer.strategy"] == "mirrored"
