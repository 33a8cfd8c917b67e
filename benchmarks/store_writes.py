"""What writing metric points to a SQLite MLflow store costs: MLflow's ``log_batch`` against
trainkit's direct writer (:mod:`trainkit.tracking.sqlite_metrics`), side by side.

    python benchmarks/store_writes.py [--points 1000] [--rounds 5] [--keys 3]

Each round writes one batch of ``--points`` points (``--keys`` metrics a step, as a job's
writer hands them over) to a run of its own with each method, in turns, in one process and one
store. The table gives the median over the rounds of the CPU time and the wall time per point,
and the ratio of the two methods. Both runs are then read back, and the table is only printed
if they hold the same rows.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script


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

    keys = [f"metric_{k}" for k in range(args.keys)]
    with tempfile.TemporaryDirectory() as tmp:
        uri = f"sqlite:///{Path(tmp) / 'mlflow.db'}"
        client = open_client(uri)
        direct = SQLiteMetrics(uri, client)
        runs = {"log_batch": client.create_run("0").info.run_id}
        runs["direct"] = client.create_run("0").info.run_id

        def write(method: str, batch: list[tuple[str, float, int, int]]) -> None:
            if method == "direct":
                direct.log(runs[method], batch)
            else:
                metrics = [Metric(k, v, ms, s) for k, v, s, ms in batch]
                client.log_batch(runs[method], metrics=metrics, synchronous=True)

        per_point: dict[str, list[tuple[float, float]]] = {m: [] for m in runs}
        step = 0
        for _ in range(args.rounds + 1):  # the first round warms both up, unmeasured
            steps = range(step, step + -(-args.points // args.keys))
            step = steps.stop
            ms = int(time.time() * 1000)
            batch = [(k, 1.0 / (s + 1), s, ms) for s in steps for k in keys][: args.points]
            for method in runs:
                cpu, wall = time.process_time(), time.perf_counter()
                write(method, batch)
                cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
                per_point[method].append((cpu / len(batch) * 1e6, wall / len(batch) * 1e6))
        reader = MlflowClient(uri)
        stored = {
            m: sorted(
                (x.key, x.step, x.value) for k in keys for x in reader.get_metric_history(r, k)
            )
            for m, r in runs.items()
        }
        direct.close()
    if stored["direct"] != stored["log_batch"]:
        print("the two runs hold different points: no figures", file=sys.stderr)
        return 1

    print(
        f"{args.points} points a batch ({args.keys} metrics a step), median of "
        f"{args.rounds} rounds; both runs read back the same {len(stored['direct'])} points\n"
    )
    print("| method | CPU µs a point | wall µs a point |")
    print("|---|---|---|")
    medians = {}
    for method, figures in per_point.items():
        cpu = statistics.median(c for c, _ in figures[1:])
        wall = statistics.median(w for _, w in figures[1:])
        medians[method] = (cpu, wall)
        name = "MlflowClient.log_batch" if method == "log_batch" else "SQLiteMetrics (trainkit)"
        print(f"| {name} | {cpu:.1f} | {wall:.1f} |")
    (bc, bw), (dc, dw) = medians["log_batch"], medians["direct"]
    print(f"| log_batch ÷ direct | {bc / dc:.1f}x | {bw / dw:.1f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
