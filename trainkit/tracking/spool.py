"""The local file that keeps what the MLflow store could not take, one JSON record a line.

Records (the run id is not stored: the spool belongs to one run directory, and the run it
belongs to is the one recorded in ``<run_dir>/mlflow_run_id``, which may not exist yet):

``{"spec": {...}}``                  how to create the run (first line; used by ``replay``)
``{"m": [key, value, step, ms]}``    a metric point
``{"p": {key: value}}``              params
``{"t": {key: value}}``              tags
``{"a": [local_path, artifact_dir]}`` a file to upload
``{"end": status}``                  the job ended with this status
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

SPOOL_NAME = "mlflow_spool.jsonl"

Point = tuple[str, float, int, int]


def _number(value: float) -> float | str:
    # JSON has no NaN/inf; MLflow accepts them, so keep them as strings and restore on read.
    return value if math.isfinite(value) else repr(value)


class Spool:
    """Append-only JSONL file; safe to call from the writer thread and the main thread."""

    def __init__(self, path: Path, spec: dict[str, Any] | None = None) -> None:
        self.path = Path(path)
        self.spec = spec
        self._lock = threading.Lock()

    def exists(self) -> bool:
        return self.path.exists() and self.path.stat().st_size > 0

    def _append(self, records: Iterable[dict[str, Any]]) -> None:
        lines = "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records)
        if not lines:
            return
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self.spec is not None and not self.path.exists():
                lines = json.dumps({"spec": self.spec}, separators=(",", ":")) + "\n" + lines
            with self.path.open("a", encoding="utf-8") as f:
                f.write(lines)

    def add_points(self, points: Iterable[Point]) -> None:
        self._append({"m": [k, _number(v), s, t]} for k, v, s, t in points)

    def add_params(self, params: dict[str, str]) -> None:
        self._append([{"p": params}])

    def add_tags(self, tags: dict[str, str]) -> None:
        self._append([{"t": tags}])

    def add_artifact(self, local_path: str, artifact_dir: str | None) -> None:
        self._append([{"a": [local_path, artifact_dir]}])

    def add_end(self, status: str) -> None:
        self._append([{"end": status}])

    def read(self) -> list[dict[str, Any]]:
        with self._lock:
            if not self.path.exists():
                return []
            text = self.path.read_text(encoding="utf-8")
        records = []
        for line in text.splitlines():
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a crash: the rest is still worth replaying
            if "m" in record and isinstance(record["m"][1], str):
                record["m"][1] = float(record["m"][1])
            records.append(record)
        return records

    def clear(self) -> None:
        with self._lock:
            self.path.unlink(missing_ok=True)

    @staticmethod
    @staticmethod
    def spec_of(records: list[dict[str, Any]]) -> dict[str, Any] | None:
        return next((r["spec"] for r in records if "spec" in r), None)

    @staticmethod
    def count_points(records: list[dict[str, Any]]) -> int:
        return sum(1 for r in records if "m" in r)
