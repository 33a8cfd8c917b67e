"""``python run.py -m experiment=compare``: the sweep writes the comparison and logs it."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_compare_sweep_writes_table_csv_chart_and_logs_them(tmp_path):
    sweep = tmp_path / "sweep"
    command = [
        sys.executable,
        str(ROOT / "run.py"),
        "-m",
        "experiment=compare",
        "model=alexnet,inception_v1",
        "trainer.precision=float32",
        "trainer.run_eagerly=true",  # two models' graphs would take longer to trace than run
        "data.limit=32",
        "trainer.epochs=1",
        "trainer.batch_size=16",
        f"hydra.sweep.dir={sweep}",
    ]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=280)
    assert done.returncode == 0, done.stderr[-3000:]
    with (sweep / "comparison.csv").open() as table:
        rows = list(csv.DictReader(table))
    assert [r["model"] for r in rows] == ["alexnet", "inception_v1"]
    for row in rows:
        assert float(row["gmacs"]) > 0 and float(row["train_img_s"]) > 0
        assert float(row["infer_img_s"]) > 0 and 0 <= float(row["test_accuracy"]) <= 1
        assert 0 <= float(row["half_res_accuracy"]) <= 1 and row["imagenet_weights"] == "False"
    markdown = (sweep / "comparison.md").read_text()
    assert markdown.count("\n| alexnet |") == 1 and "fine detail" in markdown
    assert (sweep / "comparison.png").read_bytes()[:4] == b"\x89PNG"
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    parent = (sweep / "mlflow_parent_run_id").read_text().strip()
    logged = {a.path for a in client.list_artifacts(parent, "comparison")}
    assert logged == {f"comparison/comparison.{ext}" for ext in ("md", "csv", "png")}
