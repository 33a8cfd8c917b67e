"""What a default job leaves on disk: one copy of each thing, weights-only checkpoints, no
backup once the job finished, and the bytes reported (issue 13, item 6)."""

from __future__ import annotations

import os
import re
import zipfile

import h5py
import keras
import numpy as np
import pytest

from callbacks.checkpoint import save_without_optimizer
from tests.conftest import TINY, compose_config
from trainkit import disk, job


def optimizer_groups(path) -> list[str]:
    """The top-level groups of a ``.keras`` file's weights (``layers``, ``optimizer`` ...)
    that hold at least one array."""
    found: list[str] = []
    with (
        zipfile.ZipFile(path) as archive,
        archive.open("model.weights.h5") as raw,
        h5py.File(raw, "r") as h5,
    ):
        h5.visititems(
            lambda name, obj: found.append(name) if isinstance(obj, h5py.Dataset) else None
        )
    return sorted({name.split("/")[0] for name in found})


def test_weights_only_save_drops_the_slots_and_loads(tiny_model, tiny_data, tmp_path):
    model = tiny_model()
    x, y = tiny_data()
    model.fit(x, y, epochs=1, verbose=0)
    save_without_optimizer(model, tmp_path / "weights.keras")
    model.save(tmp_path / "full.keras")  # the method is back: the optimizer is saved again
    assert "optimizer" not in optimizer_groups(tmp_path / "weights.keras")
    assert "optimizer" in optimizer_groups(tmp_path / "full.keras")
    loaded = keras.saving.load_model(tmp_path / "weights.keras", compile=False)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0))


def test_the_stacks_remove_the_backup_when_the_job_finishes():
    cfg = compose_config(["callbacks=full"])
    assert cfg.callbacks.backup.delete_on_success is True
    assert cfg.callbacks.checkpoint.save_optimizer is False
    kept = compose_config(["callbacks=full", "callbacks.backup.delete_on_success=false"])
    assert kept.callbacks.backup.delete_on_success is False


@pytest.mark.slow
def test_a_full_job_writes_at_most_1_3_checkpoints(tmp_path, capsys):
    """``callbacks=full`` with the model logged: the run directory and the store together
    hold at most 1.3x one checkpoint with Adam's state, measured here, not from the job."""
    store = tmp_path / "store"
    store.mkdir()
    overrides = [o for o in TINY if not o.startswith("tracking.log_model")]
    cfg = compose_config(
        [
            *overrides,
            "data.limit=32",
            "trainer.epochs=2",
            "trainer.run_eagerly=true",  # tracing is not what this test is about
            "callbacks=full",
            "~callbacks.hook_profiler",
            "callbacks.tensorboard.histogram_freq=0",
            "tracking.log_model=true",
            f"tracking.uri=sqlite:///{store}/mlflow.db",
        ],
        run_dir=tmp_path / "run",
    )
    job.main(cfg)
    run_dir = tmp_path / "run"
    out = capsys.readouterr().out

    assert not (run_dir / "backup").exists()
    checkpoints = sorted((run_dir / "checkpoints").glob("*.keras"))
    assert checkpoints and all("optimizer" not in optimizer_groups(p) for p in checkpoints)

    # One full checkpoint, measured: the best checkpoint with a built Adam, saved whole.
    best = next(p for p in checkpoints if p.name.startswith("epoch="))
    model = keras.saving.load_model(best, compile=False)
    model.compile(optimizer=keras.optimizers.Adam(), loss="sparse_categorical_crossentropy")
    model.optimizer.build(model.trainable_variables)
    model.save(tmp_path / "full.keras")
    full = (tmp_path / "full.keras").stat().st_size

    written = disk.tree_bytes([run_dir, store])  # each file once, hard links included
    assert written <= 1.3 * full, (written, full)
    # The store's checkpoint is the run directory's file, not a copy of it.
    stored = [p for p in store.rglob("*.keras")]
    assert stored and all(p.stat().st_nlink >= 2 for p in stored)

    line = next(line for line in out.splitlines() if line.startswith("disk: "))
    ratio = float(re.search(r"= ([\d.]+)x one checkpoint", line).group(1))
    assert ratio == pytest.approx(written / full, abs=0.1)

    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{store}/mlflow.db")
    run = client.get_run((run_dir / "mlflow_run_id").read_text().strip())
    assert run.data.metrics[disk.METRIC] == pytest.approx(written, rel=0.05)
    assert run.data.tags[disk.TAG] == line.removeprefix("disk: ")


def test_tree_bytes_counts_a_hard_linked_file_once(tmp_path):
    run_dir, store = tmp_path / "run", tmp_path / "store"
    run_dir.mkdir()
    store.mkdir()
    (run_dir / "best.keras").write_bytes(b"x" * 1000)
    (run_dir / "log.txt").write_bytes(b"y" * 10)
    os.link(run_dir / "best.keras", store / "best.keras")
    seen: set[tuple[int, int]] = set()
    assert disk.tree_bytes([run_dir], seen) == 1010
    assert disk.tree_bytes([store], seen) == 0  # already counted in the run directory
    assert disk.tree_bytes([run_dir, store]) == 1010
    usage = disk.DiskUsage(run_dir=1010, store=0, checkpoint=2020)
    assert usage.line() == (
        "disk: 1.0 kB written (run directory 1.0 kB, MLflow store 0 B) = 0.50x one checkpoint "
        "with the optimizer state (2.0 kB)"
    )
