"""What writing metric points to a SQLite MLflow store costs: MLflow's ``log_batch`` against
trainkit's direct writer (:mod:`trainkit.tracking.sqlite_metrics`), in the job's process and in
the helper process (:mod:`trainkit.tracking.store_process`), side by side.

    python benchmarks/store_writes.py [--points 1000] [--rounds 5] [--keys 3]

Each round writes one batch of ``--points`` points (``--keys`` metrics a step, as a job's
writer hands them over) to a run of its own with each method, in turns, in one process and one
store. The table gives the median over the rounds of the CPU time per point of this process
and of the helper process (read from ``/proc``, every thread), and the wall time per point.
All runs are then read back, and the table is only printed if they hold the same points.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script


METHODS = {
    "log_batch": "MlflowClient.log_batch, in this process",
    "direct": "SQLiteMetrics (trainkit), in this process",
    "helper": "SQLiteMetrics in the helper process",
}


def cpu_seconds(pid: int) -> float:
    """A process's CPU time so far, to the nanosecond (Linux's ``/proc/PID/schedstat``: its
    ``stat`` counts in 10 ms ticks, the time a whole batch takes)."""
    tasks = Path(f"/proc/{pid}/task").iterdir()
    return sum(int(Path(task, "schedstat").read_text().split()[0]) for task in tasks) / 1e9


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=1000, help="points a batch")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--keys", type=int, default=3, help="metrics a step")
    args = parser.parse_args(argv)
    if args.points < 1 or args.rounds < 1 or args.keys < 1:
        parser.error("--points, --rounds and --keys must be at least 1")

    from mlflow import MlflowClient
    from mlflow.entities import Metric

    from trainkit.tracking.sqlite_metrics import SQLiteMetrics
    from trainkit.tracking.store import open_client
    from trainkit.tracking.store_process import StoreProcess

    keys = [f"metric_{k}" for k in range(args.keys)]
    with tempfile.TemporaryDirectory() as tmp:
        uri = f"sqlite:///{Path(tmp) / 'mlflow.db'}"
        client = open_client(uri)
        direct = SQLiteMetrics(uri, client)
        helper = StoreProcess(uri)
        runs = {m: client.create_run("0").info.run_id for m in METHODS}

        def write(method: str, batch: list[tuple[str, float, int, int]]) -> None:
            if method == "direct":
                direct.log(runs[method], batch)
            elif method == "helper":
                helper.log_batch(runs[method], batch)
            else:
                metrics = [Metric(k, v, ms, s) for k, v, s, ms in batch]
                client.log_batch(runs[method], metrics=metrics, synchronous=True)

        per_point: dict[str, list[tuple[float, float, float]]] = {m: [] for m in runs}
        step = 0
        for _ in range(args.rounds + 1):  # the first round warms both up, unmeasured
            steps = range(step, step + -(-args.points // args.keys))
            step = steps.stop
            ms = int(time.time() * 1000)
            batch = [(k, 1.0 / (s + 1), s, ms) for s in steps for k in keys][: args.points]
            for method in runs:
                other = cpu_seconds(helper.process.pid)
                cpu, wall = time.process_time(), time.perf_counter()
                write(method, batch)
                cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
                other = cpu_seconds(helper.process.pid) - other
                per_point[method].append(
                    tuple(x / len(batch) * 1e6 for x in (cpu, other, wall))  # type: ignore[misc]
                )
        reader = MlflowClient(uri)
        stored = {
            m: sorted(
                (x.key, x.step, x.value) for k in keys for x in reader.get_metric_history(r, k)
            )
            for m, r in runs.items()
        }
        direct.close()
        helper.close()
    if any(points != stored["log_batch"] for points in stored.values()):
        print("the runs hold different points: no figures", file=sys.stderr)
        return 1

    print(
        f"{args.points} points a batch ({args.keys} metrics a step), median of "
        f"{args.rounds} rounds; the runs read back the same {len(stored['direct'])} points "
        "each\n"
    )
    print("| method | this process: CPU µs a point | helper: CPU µs a point | wall µs a point |")
    print("|---|---|---|---|")
    for method, figures in per_point.items():
        cpu, other, wall = (statistics.median(f[i] for f in figures[1:]) for i in range(3))
        print(f"| {METHODS[method]} | {cpu:.1f} | {other:.1f} | {wall:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
