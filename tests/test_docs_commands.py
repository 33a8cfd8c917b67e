"""Every command in ``README.md`` and ``docs/*.md`` runs as written.

**Which text is a command.** In fenced blocks marked ``bash``, ``sh``, ``shell`` or ``console``
(indented or not), each line, with ``\\`` continuations joined and a trailing ``# comment``
dropped, split at ``&&``; and every inline code span in the prose. A piece is a command when,
after ``VAR=value`` assignments, it starts with one of :data:`PROGRAMS` (``python run.py``,
``.venv/bin/python``, ``python -m``, ``python benchmarks/``, ``mlflow ui``, ``tensorboard``, ...).
Overrides quoted alone in the prose (``callbacks.early_stopping.patience=2``) are not commands.

**How each is run.** :data:`CASES` has one row per command: the test fails when the documents
hold a command without a row (write one) or a row whose command left the documents. Commands
run through ``bash -c``, exactly as written with a few overrides appended where the command
would train for minutes (:data:`TINY`: 1 epoch of 16 digits at 67x67, run eagerly, AlexNet's
FC layers 256 wide where AlexNet is the only model; the README's first command keeps its
compiled step), from a sandbox folder
that looks like the repository root (``run.py``, ``conf``, ``docs``, ``.venv`` linked in,
``photos/`` and ``$HOME/photos`` made of generated images, ``HOME`` inside the sandbox so no
cached weights or datasets are found). Placeholders (``outputs/…``, ``<date>/<time>``,
``RUN_DIR``) are filled with what an earlier command of the table left behind. A command that
needs what is not here (ImageNet weights, a module ``mypkg``) must print its documented one-line
error and exit 2. ``python`` is the real interpreter for the README's first command; for the
others it is :func:`tests.preloaded.python_on_path`'s: the same interpreter, run.py and
arguments, in a child forked from a process that has imported TensorFlow, Keras, MLflow and
Hydra once (about 13 s of CPU saved per command; how TensorFlow's start-up behaves is the
first command's and ``tests/test_cli.py``'s to show). ``tensorboard`` is the installed
script's ``tensorboard.main`` through that ``python`` (8-9 s of CPU saved a start).
``mlflow ui`` and ``tensorboard`` start on a free port of 127.0.0.1, must answer over HTTP, and
are stopped. The setup commands (venv, pip, pytest) are what ``.ci/run`` runs; the test checks
that it runs them.

All commands run in the ``outcomes`` fixture, two subprocesses at a time (one lane for the
commands that build on the first run's directory, the others beside it); each row's test then
checks its own outcome.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tests import preloaded

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PROGRAMS = (
    "python run.py",
    ".venv/bin/python ",
    "python -m ",
    "python3 -m ",
    "python benchmarks/",
    ".venv/bin/pip ",
    ".venv/bin/pytest",
    "mlflow ui",
    "tensorboard ",
)
# Where AlexNet is the model trained (dropped for a command that names another): 3.9 M
# parameters instead of 21.6 M, so checkpoints and backups of 15 and 47 MB, not 87 and 260.
SMALL_ALEXNET = "model.options.fc_units=256"
TINY = (
    "trainer.epochs=1",
    # one step of 16 (validation and test shrink to 3 images each): what a row shows is that
    # the command runs and leaves what it should; a second and third step cost ~2.5 s of CPU
    # a job (an eager Inception step at 96x96 ~3 s, a VGG16 one at 67x67 more)
    "data.limit=16",
    "data.image_size=67",
    "trainer.batch_size=16",
    "tracking.log_model=false",
    # no XLA compile, no bf16 graph: a third less CPU for a 3-step job
    "trainer.jit_compile=false",
    "trainer.precision=float32",
    # 3 steps run eagerly in less time than tracing takes (4 s for AlexNet, a minute for the
    # Inceptions); the first command (the README's) keeps the compiled step: GRAPH
    "trainer.run_eagerly=true",
    SMALL_ALEXNET,
)
# the README's first command: 3 compiled steps of 16 (its checkpoint serves the later rows)
GRAPH = tuple(
    "data.limit=48" if o == "data.limit=16" else o for o in TINY if o != "trainer.run_eagerly=true"
)
SHELLS = ("bash", "sh", "shell", "console")


# -- finding the commands -----------------------------------------------------------------------


def _is_command(piece: str) -> bool:
    words = piece.split()
    while words and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=\S*", words[0]):
        words.pop(0)
    rest = " ".join(words)
    if rest == ".venv/bin/pytest":
        return True
    # a program's name alone ("`tensorboard`", "`python -m`") is prose, not a command
    return any(rest.startswith(p) and len(rest) > len(p.strip()) for p in PROGRAMS)


def _pieces(line: str) -> list[str]:
    line = re.sub(r"\s+#.*$", "", line).strip()
    return [" ".join(p.split()) for p in line.split("&&") if p.strip()]


def documented_commands() -> dict[str, list[str]]:
    """Each command of the documents -> where it is written (``README.md:7``)."""
    found: dict[str, list[str]] = {}
    for path in DOCUMENTS:
        lines = path.read_text(encoding="utf-8").splitlines()
        fence: str | None = None
        pending, start = "", 0
        for number, raw in enumerate(lines, 1):
            stripped = raw.strip()
            if stripped.startswith("```"):
                fence = None if fence is not None else (stripped[3:].strip() or "text")
                continue
            where = f"{path.relative_to(ROOT)}:{number}"
            if fence is not None:
                if fence not in SHELLS:
                    continue
                if not pending:
                    start = number
                pending += (
                    " " + stripped.removesuffix("\\") if pending else stripped.removesuffix("\\")
                )
                if stripped.endswith("\\"):
                    continue
                for piece in _pieces(pending):
                    if _is_command(piece):
                        found.setdefault(piece, []).append(f"{path.relative_to(ROOT)}:{start}")
                pending = ""
                continue
            for span in re.findall(r"`([^`]+)`", raw):
                for piece in _pieces(span):
                    if _is_command(piece):
                        found.setdefault(piece, []).append(where)
    return found


# -- what each command needs --------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Case:
    """How one documented command is run and what it must do.

    kind: ``run`` (exit 0), ``error`` (exit 2 with one ``error:`` line starting with ``error``),
    ``serve`` (answers HTTP at ``path``), ``ci`` (``.ci/run`` runs it), ``same`` (the same job as
    the command in ``same``, or that command narrowed by more overrides; run and checked there).
    """

    id: str
    kind: str = "run"
    append: tuple[str, ...] | None = None  # None: TINY for run and error, nothing for the others
    lane: str = "own"  # "base": the sandbox of the first run, in order; "own": a fresh one
    fill: tuple[tuple[str, str], ...] = ()  # placeholder -> a key of Sandbox.paths
    error: str = ""
    path: str = "/"
    same: str = ""
    preloaded: bool = True  # False: ``python`` is the real interpreter (see the docstring)
    ci: tuple[str, str] = (".ci/run", "")  # for kind ci: the file that runs it, and what it holds
    check: Callable[[Outcome], None] | None = None

    @property
    def overrides(self) -> tuple[str, ...]:
        if self.append is not None:
            return self.append
        return TINY if self.kind in ("run", "error") else ()


@dataclasses.dataclass
class Outcome:
    command: str
    argv: str
    returncode: int | None
    stdout: str
    stderr: str
    cwd: Path
    seconds: float
    note: str = ""


def _assert_in(text: str, *words: str) -> None:
    for word in words:
        assert word in text, (word, text[-2000:])


def _check_folder(outcome: Outcome) -> None:
    names = json.loads(next(outcome.cwd.glob("outputs/*/*/class_names.json")).read_text())
    assert names == ["cat", "dog"]


def _check_sweep(outcome: Outcome) -> None:
    jobs = sorted(p.name for p in outcome.cwd.glob("multirun/*/*/*") if p.is_dir())
    assert jobs == ["0", "1"], jobs


def _check_predict(outcome: Outcome) -> None:
    (csv,) = outcome.cwd.glob("outputs/*/*/predictions.csv")
    rows = csv.read_text().splitlines()
    # a header, then the top 5 classes of each of the 3 images of photos/, one row per rank
    assert rows[0] == "image,rank,class_index,class_name,probability", rows[:2]
    ranks = sorted((r.split(",")[0], r.split(",")[1]) for r in rows[1:])
    images = sorted({image for image, _ in ranks})
    assert len(images) == 3 and ranks == [(i, str(k)) for i in images for k in range(1, 6)]


def _check_profile(outcome: Outcome) -> None:
    traces = list(outcome.cwd.glob("outputs/*/*/tensorboard/**/*.xplane.pb"))
    assert traces, "no profiler trace for batches 10 to 20"


def _check_models(outcome: Outcome) -> None:
    assert "alexnet" in outcome.stdout and "62,378,344" in outcome.stdout, outcome.stdout


def _check_user_callback(outcome: Outcome) -> None:
    (csv,) = outcome.cwd.glob("outputs/*/*/batch_loss.csv")
    assert csv.read_text().splitlines()[0].startswith("epoch,step,loss")


def _check_replay(outcome: Outcome) -> None:
    assert "wrote" in outcome.stdout, outcome.stdout


def _check_compare(models: tuple[str, ...]) -> Callable[[Outcome], None]:
    """The sweep's comparison: one row per model in the CSV and the table, the chart, and the
    three files on the sweep's parent MLflow run."""

    def check(outcome: Outcome) -> None:
        import csv

        from mlflow import MlflowClient

        (sweep,) = outcome.cwd.glob("multirun/*/*")
        with (sweep / "comparison.csv").open() as table:
            rows = list(csv.DictReader(table))
        assert [r["model"] for r in rows] == list(models), rows
        for row in rows:
            assert float(row["gmacs"]) > 0 and float(row["train_img_s"]) > 0
            assert float(row["infer_img_s"]) > 0 and 0 <= float(row["test_accuracy"]) <= 1
            assert 0 <= float(row["half_res_accuracy"]) <= 1
            assert row["imagenet_weights"] == str(models_with_weights(row["model"]))
        markdown = (sweep / "comparison.md").read_text()
        assert "fine detail" in markdown
        assert all(markdown.count(f"\n| {model} |") == 1 for model in models), markdown
        assert (sweep / "comparison.png").read_bytes()[:4] == b"\x89PNG"
        client = MlflowClient(f"sqlite:///{outcome.cwd / 'mlflow.db'}")
        parent = (sweep / "mlflow_parent_run_id").read_text().strip()
        logged = {a.path for a in client.list_artifacts(parent, "comparison")}
        assert logged == {f"comparison/comparison.{ext}" for ext in ("md", "csv", "png")}

    return check


def models_with_weights(name: str) -> bool:
    from trainkit.models import get_spec

    return get_spec(name).imagenet_weights


def _check_quiet_terminal(outcome: Outcome) -> None:
    """The README's command in a real process: no TensorFlow start-up chatter on the terminal
    (TF_CPP_MIN_LOG_LEVEL=2 is set, as before: it alone never hid these lines)."""
    assert "absl::InitializeLog" not in outcome.stderr, outcome.stderr[-2000:]
    assert "oneDNN" not in outcome.stderr, outcome.stderr[-2000:]


def _check_debug_fast(outcome: Outcome) -> None:
    """1 epoch of 3 batches: MLflow has the loss at steps 1, 2 and 3 of the one debug run."""
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{outcome.cwd / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("debug").experiment_id])
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "loss")]
    assert sorted(steps) == [1, 2, 3], steps


def _check_one_cycle(outcome: Outcome) -> None:
    config = next(outcome.cwd.glob("outputs/*/*/.hydra/config.yaml")).read_text()
    assert "schedule: one_cycle" in config


BASE = "python run.py model=alexnet callbacks=full"
MLFLOW_UI = "mlflow ui --backend-store-uri sqlite:///mlflow.db"
CASES: dict[str, Case] = {
    BASE: Case(
        "alexnet-full", lane="base", append=GRAPH, preloaded=False, check=_check_quiet_terminal
    ),
    ".venv/bin/python run.py model=alexnet callbacks=full": Case(
        "venv-alexnet-full", kind="same", same=BASE
    ),
    "python3 -m venv .venv": Case("ci-venv", kind="ci"),
    ".venv/bin/pip install uv": Case("ci-install-uv", kind="ci"),
    # the main job's install byte-compiles everything; the tests' compiles what they import
    '.venv/bin/python -m uv pip install --compile-bytecode -e ".[cpu]"': Case(
        "ci-install-cpu",
        kind="ci",
        ci=(".ci/run", '.venv/bin/python -m uv pip install -e ".[cpu,dev]"'),
    ),
    '.venv/bin/python -m uv pip install -e ".[cpu,dev]"': Case("ci-install-cpu-dev", kind="ci"),
    # a GPU machine's install: not here; the extra must exist
    '.venv/bin/python -m uv pip install --compile-bytecode -e ".[cuda]"': Case(
        "ci-install-cuda", kind="ci", ci=("pyproject.toml", 'cuda = ["tensorflow[and-cuda]')
    ),
    "python -m trainkit.models alexnet vgg16": Case(
        "models-two", append=(), check=lambda o: _assert_in(o.stdout, "alexnet", "vgg16")
    ),
    "python run.py --cfg job": Case(
        "cfg-job", append=(), check=lambda o: _assert_in(o.stdout, "callbacks:", "trainer:")
    ),
    # docs/scaling.md: what needs GPUs, a cluster or minutes of sweeps is run by the tests of
    # tests/distribute/ (kind "covered": the named file must run it); Slurm needs a cluster.
    "python run.py model=resnet50 trainer.strategy=mirrored trainer.batch_size=256": Case(
        "scaling-mirrored", kind="covered", ci=("tests/distribute/test_mirrored.py", "mirrored")
    ),
    "python run.py model=resnet50 trainer.strategy=mirrored "
    '\'trainer.devices=["/gpu:0","/gpu:1"]\'': Case(
        "scaling-devices", kind="covered", ci=("tests/distribute/test_mirrored.py", "devices")
    ),
    "python run.py model=resnet50 trainer.strategy=multi_worker trainer.batch_size=512 "
    "hydra.run.dir=/shared/runs/resnet50-a": Case(
        "scaling-multi-worker",
        kind="covered",
        ci=("tests/distribute/test_multi_worker.py", "multi_worker"),
    ),
    "python run.py -m model=alexnet,mobilenet_v2 trainer.epochs=3": Case(
        "scaling-sweep", kind="covered", ci=("tests/distribute/test_sweeps.py", "-m")
    ),
    "python run.py -m hydra/launcher=joblib hydra.launcher.n_jobs=2 model=alexnet,mobilenet_v2": (
        Case(
            "scaling-joblib",
            kind="covered",
            ci=("tests/distribute/test_sweeps.py", "hydra/launcher=joblib"),
        )
    ),
    "python run.py -m hydra/launcher=local model=alexnet,mobilenet_v2": Case(
        "scaling-local", kind="covered", ci=("tests/distribute/test_sweeps.py", "launcher=local")
    ),
    "python run.py -m hydra/launcher=slurm hydra.launcher.partition=gpu "
    "model=alexnet,mobilenet_v2": Case(
        "scaling-slurm", kind="covered", ci=("conf/hydra/launcher/slurm.yaml", "submitit")
    ),
    "python run.py -m hparams_search=optuna hydra.sweeper.n_trials=20": Case(
        "scaling-optuna",
        kind="covered",
        ci=("tests/distribute/test_sweeps.py", "hparams_search=optuna"),
    ),
    "python run.py tracking=server tracking.uri=http://mlflow-host:5000": Case(
        "scaling-server", kind="covered", ci=("tests/distribute/test_server.py", "tracking=server")
    ),
    ".venv/bin/python tests/run_suite.py": Case("ci-run-suite", kind="ci"),
    # the quick check while working: the first part of tests/run_suite.py, which .ci/run runs
    '.venv/bin/pytest -m "not slow and not server"': Case(
        "quick-check", kind="ci", ci=("tests/run_suite.py", "not slow and not server")
    ),
    "mlflow ui --backend-store-uri sqlite:///…/mlflow.db": Case(
        "mlflow-ui-printed", kind="serve", lane="base", fill=(("…", "sandbox"),), path="/health"
    ),
    "tensorboard --logdir …": Case(
        "tensorboard-printed",
        kind="serve",
        lane="base",
        fill=(("…", "tensorboard"),),
        path="/data/runs",
    ),
    "python run.py model=inception_v1 data.image_size=96": Case(
        "inception-96", append=tuple(o for o in TINY if not o.startswith("data.image_size"))
    ),
    "python run.py data=folder \"data.path='~/photos'\"": Case("folder-home", check=_check_folder),
    "python run.py callbacks=minimal trainer.epochs=10": Case("minimal"),
    "python run.py debug=fast": Case(
        "debug-fast",
        check=_check_debug_fast,
        append=(
            "data.image_size=67",
            "trainer.batch_size=16",
            "trainer.run_eagerly=true",
            SMALL_ALEXNET,
        ),
    ),
    "python run.py experiment=example": Case("experiment-example"),
    "python run.py -m optimizer.learning_rate=1e-4,3e-4": Case(
        "sweep", lane="base", check=_check_sweep
    ),
    # one model: the list of all builds each of them (about a minute of CPU)
    "python -m trainkit.models": Case("models-list", append=("alexnet",), check=_check_models),
    "python run.py model=resnet50 model.weights=imagenet experiment=finetune": Case(
        "finetune-imagenet",
        kind="error",
        error="error: ImageNet weights for 'resnet50' are not in the Keras cache",
    ),
    "python run.py model=alexnet model.weights=outputs/…/checkpoints/last.keras": Case(
        "weights-last", lane="base", fill=(("…", "run"),)
    ),
    "python run.py task=predict checkpoint=outputs/…/checkpoints/last.keras inputs=photos/": Case(
        "predict", lane="base", fill=(("…", "run"),), append=(), check=_check_predict
    ),
    "python run.py callbacks.early_stopping.patience=2 callbacks.early_stopping.min_delta=0.01": (
        Case("early-stopping-options")
    ),
    "python run.py callbacks=full callbacks.lr_schedule.schedule=one_cycle": Case(
        "one-cycle", check=_check_one_cycle
    ),
    "python run.py callbacks=full +callbacks.mine._target_=mypkg.MyCallback "
    "+callbacks.mine.every=10": Case(
        "mypkg-placeholder", kind="error", error="error: callbacks.mine"
    ),
    MLFLOW_UI: Case("mlflow-ui", kind="serve", lane="base", path="/health"),
    "python -m trainkit.tracking.replay RUN_DIR": Case(
        "replay-run-dir",
        lane="base",
        fill=(("RUN_DIR", "spooled"),),
        append=(),
        check=_check_replay,
    ),
    "tensorboard --logdir outputs/": Case(
        "tensorboard-outputs", kind="serve", lane="base", path="/data/runs"
    ),
    "python run.py callbacks=full 'callbacks.tensorboard.profile_batch=\"10,20\"'": Case(
        "profile-batch",
        # 22 steps of 4 at 67x67, so batches 10 to 20 are there to trace
        append=(
            "trainer.epochs=1",
            "data.limit=88",
            "data.image_size=67",
            "trainer.batch_size=4",
            "tracking.log_model=false",
            "trainer.jit_compile=false",
            "trainer.precision=float32",
            SMALL_ALEXNET,
        ),
        check=_check_profile,
    ),
    "python benchmarks/callback_overhead.py --model mlp --rounds 5": Case(
        "benchmark-overhead",
        append=("--rounds", "1", "--steps", "3", "--only", "timing", "--spe", "1"),
    ),
    "python benchmarks/callback_overhead.py --model mlp --interleave": Case(
        "benchmark-overhead-interleave",
        append=("--rounds", "1", "--steps", "24", "--block", "6", "--only", "timing"),
        check=lambda o: _assert_in(o.stdout, "the stack on and off every 6 steps", "timing"),
    ),
    "python benchmarks/store_writes.py": Case(
        "benchmark-store-writes",
        append=("--rounds", "1", "--points", "30"),
        check=lambda o: _assert_in(o.stdout, "SQLiteMetrics (trainkit)", "in the helper process"),
    ),
    "python -m trainkit.tracking.replay outputs/<date>/<time>": Case(
        "replay-outputs",
        lane="base",
        fill=(("<date>/<time>", "spooled_rel"),),
        append=(),
        check=_check_replay,
    ),
    "tensorboard --logdir multirun/<date>/<time>": Case(
        "tensorboard-sweep-placeholder",
        kind="serve",
        lane="base",
        fill=(("<date>/<time>", "sweep_rel"),),
        path="/data/runs",
    ),
    # all 14 models take an hour here: the row below runs this sweep narrowed to two of them
    # and checks the whole comparison; this row passes only if that one does
    "python run.py -m experiment=compare": Case(
        "compare-all",
        kind="same",
        same="python run.py -m experiment=compare model=alexnet,mobilenet_v2",
    ),
    "python run.py -m experiment=compare model=alexnet,mobilenet_v2": Case(
        "compare-few", check=_check_compare(("alexnet", "mobilenet_v2"))
    ),
    "PYTHONPATH=docs/examples python run.py callbacks=full "
    "+callbacks.mine._target_=my_callbacks.BatchLossCSV +callbacks.mine.every=10": Case(
        "guide-example", check=_check_user_callback
    ),
}


# -- running them -------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _images(folder: Path, count: int, seed: int) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        pixels = rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i}.png")


class Sandbox:
    """A folder that looks like the repository root to a user's command."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        for name in ("run.py", "conf", "docs", "benchmarks"):
            (path / name).symlink_to(ROOT / name)
        (path / ".venv").symlink_to(Path(sys.prefix))
        self.home = path / "home"
        _images(self.home / "photos" / "cat", 12, 0)
        _images(self.home / "photos" / "dog", 12, 1)
        _images(path / "photos", 3, 2)
        self.paths: dict[str, str] = {"sandbox": str(path)}
        self.env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("KERAS_HOME", "MLFLOW_TRACKING_URI", "PYTHONPATH")
        }
        self.env.update(
            HOME=str(self.home),
            PYTHONPATH=str(ROOT),
            TF_CPP_MIN_LOG_LEVEL="2",
            MPLBACKEND="Agg",
            # `mlflow ui` would start a job runner and huey consumers for GenAI jobs, each
            # importing MLflow: CPU the suite's budget has not got, for nothing a command uses
            MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false",
            # and four uvicorn workers (``--workers``' default), each importing MLflow, where
            # one answers the test's few requests: ~20 s of CPU a start
            MLFLOW_WORKERS="1",
            PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        )

    def command_line(self, command: str, case: Case) -> str:
        for placeholder, key in case.fill:
            command = command.replace(placeholder, self.paths[key])
        return self.line_of(command, case)

    @staticmethod
    def line_of(command: str, case: Case) -> str:
        overrides = case.overrides
        models = {
            m
            for o in (*command.split(), *overrides)
            if o.startswith("model=")
            for m in o.removeprefix("model=").split(",")
        }
        if models - {"alexnet"}:
            overrides = tuple(o for o in overrides if o != SMALL_ALEXNET)
        return " ".join([command, *map(shlex.quote, overrides)])

    def run(self, command: str, case: Case, extra: tuple[str, ...] = ()) -> Outcome:
        line = self.command_line(command, case)
        if extra:
            line += " " + " ".join(map(shlex.quote, extra))
        started = time.monotonic()
        env = {**self.env, **(preloaded.python_on_path() if case.preloaded else {})}
        done = subprocess.run(
            ["bash", "-c", line],
            cwd=self.path,
            env=env,
            capture_output=True,
            text=True,
            timeout=420,
            check=False,
        )
        return Outcome(
            command,
            line,
            done.returncode,
            done.stdout,
            done.stderr,
            self.path,
            time.monotonic() - started,
        )

    def serve(self, command: str, case: Case, port: int, keep: bool = False):
        """Start a server command on ``port``; the outcome's returncode is the HTTP status."""
        line = self.command_line(command, case)
        if "--port " in line:
            line = re.sub(r"--port \d+", f"--port {port}", line)
        else:
            line += f" --port {port}"
        line += " --host 127.0.0.1"
        started = time.monotonic()
        # a file, not a pipe: a server's log nobody reads would fill a pipe and block it
        log = self.path / f"serve-{port}.log"
        env = self.env
        if line.startswith("tensorboard ") and case.preloaded:
            env = {**env, **preloaded.python_on_path()}  # its tensorboard: see there
        with log.open("w") as sink:
            process = subprocess.Popen(
                ["bash", "-c", f"exec {line}"],
                cwd=self.path,
                env=env,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        status, body = None, ""
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and process.poll() is None:
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{port}{case.path}", timeout=5
                ) as answer:
                    status, body = answer.status, answer.read().decode()
                    break
            except OSError:
                time.sleep(0.5)
        seconds = time.monotonic() - started
        output = log.read_text(errors="replace")[-3000:]
        outcome = Outcome(command, line, status, body, output, self.path, seconds)
        if keep:
            return outcome, process
        _stop(process)
        return outcome

    def newest_run(self) -> Path:
        runs = [p for p in self.path.glob("outputs/*/*") if (p / ".hydra").is_dir()]
        return max(runs, key=lambda p: p.stat().st_mtime)


def _stop(process: subprocess.Popen) -> None:
    import signal

    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=20)
    except ProcessLookupError:
        pass  # already gone
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=20)


def _failed(command: str, sandbox: Sandbox, error: BaseException) -> Outcome:
    return Outcome(command, command, None, "", f"{type(error).__name__}: {error}", sandbox.path, 0)


def _base_lane(sandbox: Sandbox, commands: list[str], results: dict[str, Outcome]) -> None:
    """The commands that build on the first run, in order, in the first run's sandbox. A step
    that fails leaves its dependants an outcome that says so."""
    try:
        _base_steps(sandbox, commands, results)
    except Exception as error:  # noqa: BLE001 - recorded for each command still without one
        for command in commands:
            if CASES[command].lane == "base" and command not in results:
                results[command] = _failed(command, sandbox, error)


def _base_steps(sandbox: Sandbox, commands: list[str], results: dict[str, Outcome]) -> None:
    documented = set(commands)
    results[BASE] = sandbox.run(BASE, CASES[BASE])
    assert results[BASE].returncode == 0, "the first run failed"
    run_dir = sandbox.newest_run()
    sandbox.paths["run"] = str(run_dir.relative_to(sandbox.path / "outputs"))
    sandbox.paths["tensorboard"] = str(run_dir / "tensorboard")
    # A run whose MLflow server did not answer: what the replay commands write later, into the
    # `mlflow ui` started on that port.
    port = _free_port()
    spooled = sandbox.run(
        "python run.py callbacks=minimal",
        Case("spool", append=TINY),
        extra=(f"tracking.uri=http://127.0.0.1:{port}", "hydra.run.dir=outputs/spooled/run"),
    )
    assert spooled.returncode == 0, spooled.stderr[-2000:]
    shutil.copytree(sandbox.path / "outputs/spooled", sandbox.path / "outputs/spooled2")
    sandbox.paths["spooled"] = "outputs/spooled/run"
    sandbox.paths["spooled_rel"] = "spooled2/run"
    for command in commands:
        case = CASES[command]
        if case.lane == "base" and case.kind == "run" and command != BASE:
            if "replay" in case.id:
                continue
            results[command] = sandbox.run(command, case)
            if case.id == "sweep":
                (sweep,) = sandbox.path.glob("multirun/*/*")
                sandbox.paths["sweep_rel"] = str(sweep.relative_to(sandbox.path / "multirun"))
    if MLFLOW_UI in documented:
        outcome, server = sandbox.serve(MLFLOW_UI, CASES[MLFLOW_UI], port, keep=True)
        results[MLFLOW_UI] = outcome
        try:
            # each worker's first answer is slow; replay's probe waits 2 s
            for _ in range(8):
                with contextlib.suppress(OSError):
                    urllib.request.urlopen(
                        f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/search?max_results=1",
                        timeout=30,
                    ).close()
            for command in commands:
                if "replay" in CASES[command].id:
                    results[command] = sandbox.run(command, CASES[command])
        finally:
            _stop(server)
    served: dict[str, Outcome] = {}
    for command in commands:
        case = CASES[command]
        if case.lane == "base" and case.kind == "serve" and command != MLFLOW_UI:
            line = sandbox.command_line(command, case)
            if line not in served:
                served[line] = sandbox.serve(command, case, _free_port())
            results[command] = served[line]


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory) -> dict[str, Outcome]:
    """Every documented command of the table, run once."""
    commands = [c for c in documented_commands() if c in CASES]
    results: dict[str, Outcome] = {}
    root = tmp_path_factory.mktemp("docs")
    own = [c for c in commands if CASES[c].lane == "own" and CASES[c].kind in ("run", "error")]
    # the longest first, so the two lanes end together
    slow_first = ("models-list", "benchmark", "profile-batch", "inception-96")
    own.sort(key=lambda c: not any(CASES[c].id.startswith(s) for s in slow_first))

    # A store made once and copied: each fresh sandbox would spend seconds creating its tables
    # (the first run, in the base sandbox, creates its own as a new user's does).
    from mlflow import MlflowClient

    template = root / "template.db"
    MlflowClient(f"sqlite:///{template}").search_experiments()

    # Commands that are the same shell line once shrunk run once.
    lines: dict[str, list[str]] = {}
    for command in own:
        lines.setdefault(Sandbox.line_of(command, CASES[command]), []).append(command)

    def run_own(index: int, line: str) -> None:
        sandbox = Sandbox(root / f"own{index}")
        shutil.copy(template, sandbox.path / "mlflow.db")
        first, *others = lines[line]
        try:
            results[first] = sandbox.run(first, CASES[first])
        except Exception as error:  # noqa: BLE001 - a timeout is this command's failure
            results[first] = _failed(first, sandbox, error)
        for command in others:
            results[command] = results[first]

    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        futures = [pool.submit(_base_lane, Sandbox(root / "base"), commands, results)]
        futures += [pool.submit(run_own, i, line) for i, line in enumerate(lines)]
        for future in futures:
            future.result()
    # where the fixture's time went (shown by ``pytest -s`` or with a failure)
    for outcome in sorted(results.values(), key=lambda o: -o.seconds):
        print(f"{outcome.seconds:6.1f} s  {outcome.command}")
    return results


# -- the tests ----------------------------------------------------------------------------------


def test_every_documented_command_has_a_row():
    documented = documented_commands()
    missing = {c: where for c, where in documented.items() if c not in CASES}
    assert not missing, f"documented commands without a row in CASES (add one): {missing}"
    stale = [c for c in CASES if c not in documented]
    assert not stale, f"rows for commands no document holds any more (remove them): {stale}"
    ids = [case.id for case in CASES.values()]
    assert len(ids) == len(set(ids))


def test_recognises_fences_inline_code_and_continuations():
    assert _is_command("PYTHONPATH=docs/examples python run.py callbacks=full")
    assert _is_command(".venv/bin/pytest") and _is_command("mlflow ui --port 1")
    assert not _is_command("callbacks.early_stopping.patience=2")
    assert not _is_command("python3 -c 'print()'") and not _is_command("pythonpath=x")
    assert _pieces("a && python run.py x=1   # comment") == ["a", "python run.py x=1"]
    found = documented_commands()
    key = (
        "PYTHONPATH=docs/examples python run.py callbacks=full "
        "+callbacks.mine._target_=my_callbacks.BatchLossCSV +callbacks.mine.every=10"
    )
    (where,) = found[key]
    lines = (ROOT / "docs/writing-callbacks.md").read_text().splitlines()
    assert where.startswith("docs/writing-callbacks.md:")
    assert lines[int(where.rpartition(":")[2]) - 1].startswith("PYTHONPATH=docs/examples")
    assert not _is_command("python run.py") and not _is_command("tensorboard")
    # a fenced bash block and inline code count; architecture.md's diagram (a plain fence) not
    assert found[BASE] == ["README.md:7", "docs/benchmarks.md:11"]


@pytest.mark.parametrize("command", list(CASES), ids=[case.id for case in CASES.values()])
def test_documented_command(request, command):
    case = CASES[command]
    if case.kind in ("ci", "covered"):
        path, wanted = case.ci
        text = (ROOT / path).read_text().replace(" -q", "")
        wanted = wanted or command.replace("install -e .", 'install -e ".[dev]"')
        assert wanted in text, f"{path} does not run {command!r}"
        return
    outcomes = request.getfixturevalue("outcomes")
    if case.kind == "same":
        if command.startswith(".venv/bin/python"):
            assert command.replace(".venv/bin/python", "python") == case.same
            venv_python = outcomes[case.same].cwd / ".venv" / "bin" / "python"
            assert (
                os.path.samefile(venv_python, sys.executable)
                or venv_python.resolve() == Path(sys.executable).resolve()
            )
        else:  # the same command with more overrides (narrowed)
            assert case.same.startswith(f"{command} "), case.same
        command, case = case.same, CASES[case.same]
    outcome = outcomes.get(command)
    assert outcome is not None, "the command did not run (see the other failures)"
    where = (
        f"{outcome.argv}\n--- stdout\n{outcome.stdout[-2000:]}\n--- stderr\n"
        f"{outcome.stderr[-3000:]}"
    )
    if case.kind == "run":
        assert outcome.returncode == 0, where
        if case.check:
            case.check(outcome)
    elif case.kind == "error":
        assert outcome.returncode == 2, where
        errors = [line for line in outcome.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and errors[0].startswith(case.error), where
        assert "Traceback" not in outcome.stderr, where
    elif case.kind == "serve":
        assert outcome.returncode == 200, where
        if case.path == "/data/runs":
            assert json.loads(outcome.stdout), "TensorBoard found no runs"
