"""How long ``python run.py model=alexnet callbacks=full`` takes to reach its first step.

    python benchmarks/startup.py [--rounds N] [--importtime] [overrides ...]

``run.py`` runs as a user starts it (the given overrides, default ``model=alexnet
callbacks=full``, a fresh run directory), in a folder that holds two helpers on its
``PYTHONPATH``: a ``sitecustomize`` that timestamps the job's functions as the process calls
them (``quiet_tensorflow``, ``check_callbacks``, ``make_strategy``, ``data.load``,
``build_model``, ``compile_model``, ``instantiate_callbacks``, ``build_stack``), and a probe
callback, last in the stack, that timestamps ``on_train_begin`` and the first step, then ends
the process. The split is of that one process, in the job's order:

* python start: from the command to the interpreter running ``sitecustomize``;
* run.py + Hydra: run.py's imports, Hydra's composition of the config and the job's check of
  it (before TensorFlow);
* TensorFlow + Keras import (``trainkit.runtime.quiet_tensorflow``);
* callback imports: the import of every callback's module (MLflow's among them);
* seed, precision, strategy; data; model build; compile; callbacks (instantiated, stacked);
* fit start: Keras's set-up and every callback's ``on_train_begin`` (a resumed MLflow run opens
  here; a new one opens on the MLflow writer thread after the first step);
* trace + first step: from the first ``on_train_batch_begin`` to its ``on_train_batch_end``.

The MLflow store is created by the first round (a new SQLite file: MLflow creates its tables)
and reused by the next, as a user's second run reuses ``mlflow.db``: rounds after the first
are the usual case. ``--importtime`` reruns once with ``python -X importtime`` and lists the
modules that took longest to import before the first step.

Target (issue 13): under 15 s end to end on this machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ["model=alexnet", "callbacks=full"]

SITECUSTOMIZE = """
import importlib.abc, importlib.util, os, sys, time

MARKS = []
MARKS.append(("interpreter", time.time()))
TARGETS = {
    "trainkit.runtime": ["quiet_tensorflow", "configure"],
    "trainkit.job": ["main", "check_callbacks", "compile_model"],
    "trainkit.data": ["load"],
    "trainkit.models": ["build_model"],
    "trainkit.distribute": ["make_strategy"],
    "trainkit.stack": ["instantiate_callbacks", "build_stack"],
}


def _wrap(module, name):
    function = getattr(module, name)

    def wrapper(*args, **kwargs):
        MARKS.append((name + ">", time.time()))
        try:
            return function(*args, **kwargs)
        finally:
            MARKS.append((name + "<", time.time()))

    setattr(module, name, wrapper)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name not in TARGETS:
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        execute = spec.loader.exec_module

        def exec_module(module):
            execute(module)
            for function in TARGETS[name]:
                _wrap(module, function)

        spec.loader.exec_module = exec_module
        return spec


if os.environ.get("STARTUP_PROBE_OUT"):
    sys.meta_path.insert(0, _Finder())
"""

PROBE = '''
import json, os, sys, time
import keras


class FirstStep(keras.callbacks.Callback):
    """Timestamps on_train_begin and the first step; writes the marks and ends the process."""

    def on_train_begin(self, logs=None):
        sys.modules["sitecustomize"].MARKS.append(("on_train_begin", time.time()))

    def on_train_batch_begin(self, batch, logs=None):
        sys.modules["sitecustomize"].MARKS.append(("first_step>", time.time()))

    def on_train_batch_end(self, batch, logs=None):
        marks = sys.modules["sitecustomize"].MARKS
        marks.append(("first_step<", time.time()))
        with open(os.environ["STARTUP_PROBE_OUT"], "w") as out:
            json.dump(marks, out)
        os._exit(0)
'''

# (phase, from mark, to mark): consecutive, so the phases add up to the whole.
PHASES = [
    ("python start", "command", "interpreter"),
    ("run.py imports + Hydra config + config check", "interpreter", "quiet_tensorflow>"),
    ("TensorFlow + Keras import", "quiet_tensorflow>", "quiet_tensorflow<"),
    ("callback imports", "quiet_tensorflow<", "check_callbacks<"),
    ("seed, precision, strategy", "check_callbacks<", "make_strategy<"),
    ("data", "make_strategy<", "load<"),
    ("model build", "load<", "build_model<"),
    ("compile", "build_model<", "compile_model<"),
    ("callbacks (instantiate, stack)", "compile_model<", "build_stack<"),
    ("fit start (callbacks' on_train_begin)", "build_stack<", "first_step>"),
    ("trace + first step", "first_step>", "first_step<"),
]


def run_once(
    overrides: list[str], folder: Path, round_index: int, importtime: bool = False
) -> tuple[dict[str, float], str]:
    """One run.py to its first step; the marks (first occurrence of each) and its stderr."""
    out = folder / f"marks-{round_index}.json"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(folder), str(ROOT)]),
        "STARTUP_PROBE_OUT": str(out),
    }
    command = [
        sys.executable,
        *(["-X", "importtime"] if importtime else []),
        str(ROOT / "run.py"),
        *overrides,
        "+callbacks.zz_first_step._target_=startup_probe.FirstStep",
        f"hydra.run.dir={folder}/run-{round_index}",
        f"tracking.uri=sqlite:///{folder}/mlflow.db",
    ]
    start = time.time()
    done = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True)
    if not out.exists():
        raise SystemExit(f"run.py ended before its first step:\n{done.stderr[-3000:]}")
    marks: dict[str, float] = {"command": start}
    for name, when in json.loads(out.read_text()):
        marks.setdefault(name, when)
    return marks, done.stderr


def split(marks: dict[str, float]) -> list[tuple[str, float]]:
    return [(name, marks[b] - marks[a]) for name, a, b in PHASES if a in marks and b in marks]


def slowest_imports(stderr: str, top: int = 15) -> list[tuple[str, float]]:
    """Modules by cumulative import time (``-X importtime``), the outermost ones only."""
    rows: list[tuple[str, float]] = []
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _self, cumulative, name = line[len("import time:") :].split("|")
        depth = (len(name) - len(name.lstrip(" "))) // 2
        if depth == 0:
            rows.append((name.strip(), int(cumulative) / 1e6))
    return sorted(rows, key=lambda row: -row[1])[:top]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2, help="runs; the first creates the store")
    parser.add_argument("--importtime", action="store_true", help="list the slowest imports")
    args, overrides = parser.parse_known_args(argv)
    overrides = overrides or DEFAULT
    from rich.console import Console
    from rich.table import Table

    with tempfile.TemporaryDirectory(prefix="trainkit-startup-") as tmp:
        folder = Path(tmp)
        (folder / "sitecustomize.py").write_text(SITECUSTOMIZE)
        (folder / "startup_probe.py").write_text(PROBE)
        rounds = [split(run_once(overrides, folder, i)[0]) for i in range(args.rounds)]
        stderr = (
            run_once(overrides, folder, args.rounds, importtime=True)[1] if args.importtime else ""
        )

    names = [name for name, _ in rounds[0]]
    headers = ["phase", "new store (s)", *[f"round {i + 1} (s)" for i in range(1, len(rounds))]]
    table = Table(*headers, title=f"start-up: run.py {' '.join(overrides)}")
    for index, name in enumerate(names):
        table.add_row(name, *[f"{r[index][1]:.1f}" for r in rounds])
    table.add_row("command to first step", *[f"{sum(s for _, s in r):.1f}" for r in rounds])
    console = Console()
    console.print(table)
    if stderr:
        imports = Table("module (outermost)", "cumulative import s", title="slowest imports")
        for name, seconds in slowest_imports(stderr):
            imports.add_row(name, f"{seconds:.2f}")
        console.print(imports)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
