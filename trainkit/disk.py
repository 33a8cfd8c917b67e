"""What a job leaves on disk: the run directory and the MLflow store's growth, in bytes.

The job measures it once it has ended (every callback closed: the backup removed, the model
logged) and reports one line, the metric ``system/disk_bytes_written`` and the tag
``trainkit.disk`` (:func:`report`). The yardstick is one full checkpoint: the bytes of every
model and optimizer variable (what a ``.keras`` file with Adam's state, or a backup, holds).

A file with several names (a hard link: ``last.keras`` and the best checkpoint, the best
checkpoint and its copy in a local MLflow artifact store) is counted once: it is on the disk
once. The store's growth is this run's artifact folder and its logged models' folders, plus
what the SQLite file grew by during the job (other jobs writing to the same file at the same
time add theirs); with a remote store, what the store lists for the run.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("trainkit")

# With the machine's metrics (MLflow's System metrics tab): what the job cost, not what it learnt.
METRIC = "system/disk_bytes_written"
TAG = "trainkit.disk"


@dataclass(frozen=True)
class DiskUsage:
    """Bytes a job wrote: ``run_dir``, ``store`` (None: no MLflow logger, or not measurable)
    and the size of one full checkpoint (model and optimizer variables)."""

    run_dir: int
    store: int | None
    checkpoint: int

    @property
    def total(self) -> int:
        return self.run_dir + (self.store or 0)

    @property
    def ratio(self) -> float:
        return self.total / self.checkpoint if self.checkpoint else float("nan")

    def line(self) -> str:
        store = "" if self.store is None else f", MLflow store {human(self.store)}"
        return (
            f"disk: {human(self.total)} written (run directory {human(self.run_dir)}{store}) = "
            f"{self.ratio:.2f}x one checkpoint with the optimizer state "
            f"({human(self.checkpoint)})"
        )


def human(n: int) -> str:
    """``n`` bytes in kB / MB / GB (powers of 1000, as ``ls -lh --si`` and file managers)."""
    value = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def tree_bytes(paths: Iterable[Path], seen: set[tuple[int, int]] | None = None) -> int:
    """Apparent size of every file under ``paths``, each file (inode) once; ``seen`` carries
    the inodes already counted between calls."""
    seen = set() if seen is None else seen
    total = 0
    for top in paths:
        if not top.exists():
            continue
        files = [top] if top.is_file() else _files(top)
        for path in files:
            try:
                st = path.stat()
            except FileNotFoundError:
                continue
            key = (st.st_dev, st.st_ino)
            if key not in seen:
                seen.add(key)
                total += st.st_size
    return total


def _files(top: Path) -> Iterable[Path]:
    for root, _dirs, names in os.walk(top):
        for name in names:
            yield Path(root, name)


def state_bytes(model: Any) -> int:
    """Bytes of the model's and its optimizer's variables: one full checkpoint's payload."""
    variables = list(model.variables)
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None:
        variables += list(optimizer.variables)
    total = 0
    for variable in variables:
        count = 1
        for size in variable.shape:
            count *= int(size)
        total += count * _itemsize(variable.dtype)
    return total


def _itemsize(dtype: Any) -> int:
    import numpy as np

    name = getattr(dtype, "name", dtype)
    if str(name) == "bfloat16":
        return 2
    return np.dtype(str(name)).itemsize


def sqlite_file(uri: str | None) -> Path | None:
    """The database file of a ``sqlite:///`` URI, or None."""
    prefix = "sqlite:///"
    if not uri or not uri.startswith(prefix):
        return None
    return Path(uri[len(prefix) :]).expanduser()


def file_size(path: Path | None) -> int:
    """Size of ``path`` with SQLite's ``-wal`` / ``-journal`` companions (0 if absent)."""
    if path is None:
        return 0
    total = 0
    for candidate in (
        path,
        path.with_name(path.name + "-wal"),
        path.with_name(path.name + "-journal"),
    ):
        try:
            total += candidate.stat().st_size
        except FileNotFoundError:
            continue
    return total


def measure(
    run_dir: Path, tracked: Any, model_uri: str | None, database_before: int, database: Path | None
) -> tuple[int, int | None]:
    """(run directory bytes, store growth bytes or None) as described in the module docstring.

    ``tracked`` is the job's :class:`trainkit.tracking.store.TrackedRun` (or None),
    ``model_uri`` its logged model's ``models:/<id>`` URI.
    """
    seen: set[tuple[int, int]] = set()
    run_bytes = tree_bytes([run_dir], seen)
    if tracked is None or not tracked.is_open:
        return run_bytes, None
    model_ids = [model_uri.removeprefix("models:/")] if model_uri else []
    try:
        paths = tracked.stored_paths(model_ids)
        if paths is None:  # a server's artifact store: what it lists
            return run_bytes, tracked.stored_bytes(model_ids)
        growth = max(file_size(database) - database_before, 0) if database else 0
        return run_bytes, tree_bytes(paths, seen) + growth
    except Exception as exc:  # the report must not fail a finished job
        log.warning("disk: cannot measure the MLflow store: %s: %s", type(exc).__name__, exc)
        return run_bytes, None


def report(usage: DiskUsage, tracked: Any) -> None:
    """Print the line; record it on the MLflow run (metric and tag) when there is one."""
    line = usage.line()
    print(line, flush=True)
    if tracked is None or not tracked.is_open:
        return
    try:
        tracked.client.log_metric(tracked.run_id, METRIC, float(usage.total))
        tracked.client.set_tag(tracked.run_id, TAG, line.removeprefix("disk: "))
    except Exception as exc:  # noqa: BLE001 - a store gone by now: the line was printed
        log.warning("disk: cannot record it in MLflow: %s: %s", type(exc).__name__, exc)
