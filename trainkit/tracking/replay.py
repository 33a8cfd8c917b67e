"""Write what a job left in its spool to MLflow: ``python -m trainkit.tracking.replay RUN_DIR``.

A job whose tracking store did not answer before it ended keeps its points, params, tags and
artifact list in ``<RUN_DIR>/mlflow_spool.jsonl``. This creates the run if the job never could
(or resumes the one in ``<RUN_DIR>/mlflow_run_id``), writes everything in order and ends the
run with the status the job ended with. ``--uri`` points at another store than the job's.

Exit status: 0 when everything was written, or when there is nothing to replay (no spool: the
job reached its store, or an earlier replay wrote it all; it prints ``nothing to replay``);
1 when the directory does not exist or the store does not answer.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from trainkit.tracking.flatten import redact_uri
from trainkit.tracking.spool import SPOOL_NAME, Spool
from trainkit.tracking.store import RunSpec, TrackedRun, probe
from trainkit.tracking.writer import BackgroundWriter

log = logging.getLogger("trainkit.tracking")


class NothingToReplay(Exception):
    """The run directory holds no spooled records."""


def replay(run_dir: Path, uri: str | None = None) -> tuple[str, int]:
    """Returns (run id, points written). Raises :class:`NothingToReplay` when the directory
    holds no spool, SystemExit if the store does not answer."""
    spool = Spool(Path(run_dir) / SPOOL_NAME)
    records = spool.read() if spool.exists() else []
    spec_data = Spool.spec_of(records)
    if spec_data is None:
        raise NothingToReplay(f"{run_dir}: nothing to replay (no {SPOOL_NAME})")
    spec = RunSpec.from_dict(spec_data)
    spec.run_dir = str(Path(run_dir).resolve())
    if uri:
        spec.uri = uri
    if not probe(spec.uri):
        raise SystemExit(f"MLflow store {redact_uri(spec.uri)} does not answer")
    run = TrackedRun(spec)
    run.open()
    writer = BackgroundWriter(run, spool)
    count, status = writer.replay()
    if status:
        run.end(status)
    return str(run.run_id), count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--uri", default=None, help="tracking URI (default: the job's)")
    args = parser.parse_args(argv)
    if not args.run_dir.is_dir():
        print(f"error: {args.run_dir} is not a directory", file=sys.stderr)
        return 1
    try:
        run_id, count = replay(args.run_dir, args.uri)
    except NothingToReplay as exc:
        print(exc)
        return 0
    print(f"run {run_id}: wrote {count} spooled points")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
