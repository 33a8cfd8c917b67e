"""What Hydra (or the job) says about a multirun: the sweep directory and the job's number."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainkit.context import RunContext


@dataclass(frozen=True)
class SweepInfo:
    sweep_dir: str  # absolute: it names the sweep's parent run in every job process
    job_num: int | None = None
    overrides: str | None = None


def detect_sweep(context: RunContext | None) -> SweepInfo | None:
    """``ctx.sweep`` (``sweep_dir``, ``job_num``, ``overrides``) if the job set it, else Hydra's
    own state."""
    sweep = context.sweep if context is not None else None
    if sweep and sweep.get("sweep_dir"):
        return SweepInfo(
            str(Path(sweep["sweep_dir"]).resolve()), sweep.get("job_num"), sweep.get("overrides")
        )
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode
    except ImportError:
        return None
    if not HydraConfig.initialized():
        return None
    hydra = HydraConfig.get()
    if hydra.mode != RunMode.MULTIRUN:
        return None
    sweep_dir = Path(hydra.sweep.dir)
    if not sweep_dir.is_absolute():
        sweep_dir = Path(hydra.runtime.cwd) / sweep_dir
    return SweepInfo(str(sweep_dir.resolve()), hydra.job.num, hydra.job.override_dirname or None)


def git_commit(start: Path | None = None) -> tuple[str, bool] | None:
    """(commit, dirty) of the git checkout holding ``start`` (default: the cwd), if any."""
    import subprocess

    cwd = str(start or Path.cwd())
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5
        )
        if commit.returncode != 0:
            return None
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return commit.stdout.strip(), bool(status.stdout.strip())


def job_command() -> str | None:
    """The command line that runs this job again: ``python run.py`` and the job's overrides
    (in a sweep, this job's values, not the sweep's lists)."""
    import shlex
    import sys

    try:
        from hydra.core.hydra_config import HydraConfig
    except ImportError:
        HydraConfig = None  # noqa: N806
    if HydraConfig is not None and HydraConfig.initialized():
        overrides = list(HydraConfig.get().overrides.task)
    else:
        overrides = sys.argv[1:]
    script = Path(sys.argv[0]).name if sys.argv and sys.argv[0].endswith(".py") else "run.py"
    return shlex.join(["python", script, *map(_redact_override, overrides)])


def _redact_override(override: str) -> str:
    """``db.password=x`` -> ``db.password=***``; a URI's ``user:password@`` likewise."""
    from trainkit.tracking.flatten import _SECRET_KEY, REDACTED, redact_uri

    key, sep, _ = override.partition("=")
    if sep and _SECRET_KEY.search(key):
        return f"{key}={REDACTED}"
    return redact_uri(override)


# Tags each child run carries so the parent can compare them (set by the MLflow callback).
OPTIMIZED_METRIC_TAG = "trainkit.optimized_metric"
OPTIMIZED_VALUE_TAG = "trainkit.optimized_value"
COMPARISON = "sweep_comparison"
_COLUMNS = ("job", "run", "overrides", "status", "metric", "value")


def sweep_rows(client: Any, parent_run_id: str) -> list[dict[str, str]]:
    """One row per child run of the sweep, in job order."""
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

    parent = client.get_run(parent_run_id)
    children = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent_run_id}'",
        max_results=5000,
    )
    rows = []
    for child in children:
        tags = child.data.tags
        rows.append(
            {
                "job": tags.get("trainkit.job_num", ""),
                "run": child.info.run_name or child.info.run_id,
                "overrides": tags.get("trainkit.overrides", ""),
                "status": child.info.status,
                "metric": tags.get(OPTIMIZED_METRIC_TAG, ""),
                "value": tags.get(OPTIMIZED_VALUE_TAG, ""),
            }
        )
    rows.sort(key=lambda r: (int(r["job"]) if r["job"].isdigit() else 1 << 30, r["run"]))
    return rows


def write_comparison(rows: list[dict[str, str]], directory: Path) -> list[Path]:
    """``sweep_comparison.csv`` and ``.md`` (every job) and ``.png`` (the optimized metric of
    each job that has one) in ``directory``; returns the files written."""
    import csv

    directory.mkdir(parents=True, exist_ok=True)
    written = []
    path = directory / f"{COMPARISON}.csv"
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.DictWriter(out, fieldnames=_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    written.append(path)
    path = directory / f"{COMPARISON}.md"
    lines = ["| " + " | ".join(_COLUMNS) + " |", "|" + "---|" * len(_COLUMNS)]
    for row in rows:
        lines.append("| " + " | ".join(row[c].replace("|", "\\|") for c in _COLUMNS) + " |")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    written.append(path)
    scored = [(r["run"], float(r["value"])) for r in rows if _is_number(r["value"])]
    if scored:
        written.append(_chart(scored, rows[0]["metric"], directory / f"{COMPARISON}.png"))
    return written


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _chart(scored: list[tuple[str, float]], metric: str, path: Path) -> Path:
    from trainkit.tracking.plots import _pyplot, _save

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(scored) + 1.2))
    names = [name for name, _ in scored][::-1]
    values = [value for _, value in scored][::-1]
    bars = ax.barh(names, values, color="#4c72b0")
    ax.bar_label(bars, labels=[f"{v:.4g}" for v in values], padding=3, fontsize=8)
    ax.set_xlabel(metric or "optimized metric")
    ax.set_title(f"{metric or 'optimized metric'} per job of the sweep")
    ax.margins(x=0.15)
    fig.tight_layout()
    return _save(fig, path)


def log_sweep_comparison(client: Any, parent_run_id: str, sweep_dir: str | None) -> list[Path]:
    """Rebuild the comparison from the store and log it to the sweep's parent run.

    Every job that ends calls this, so the parent always shows the jobs ended so far; the
    files are also kept in the sweep directory."""
    import tempfile

    rows = sweep_rows(client, parent_run_id)
    directory = Path(sweep_dir) if sweep_dir else None
    kept = []
    # Jobs of a parallel sweep may end together: each writes its own files, then moves them.
    with tempfile.TemporaryDirectory(prefix="trainkit-sweep-") as scratch:
        for path in write_comparison(rows, Path(scratch)):
            client.log_artifact(parent_run_id, str(path))
            if directory is not None and directory.is_dir():
                target = directory / path.name
                _copy(path, target)
                kept.append(target)
    return kept


def _copy(path: Path, target: Path) -> None:
    import os
    import shutil

    partial = target.with_name(f".{target.name}.{os.getpid()}")
    shutil.copyfile(path, partial)
    os.replace(partial, target)
