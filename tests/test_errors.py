"""Every bad input of ``docs/errors.md``, through ``run.py`` as users type it.

Each case runs ``run.py`` in a subprocess from a fresh folder and checks what the user sees: the
exit status, exactly one line on stderr that starts with ``error:`` and names the key, and no
Python traceback. The table in ``docs/errors.md`` and :data:`CASES` are the same set (a row
without a test fails ``test_every_documented_row_is_tested``).

Most cases fail in the config check, before TensorFlow is imported (about two seconds); those
that need TensorFlow (building a callback, loading a model) are marked ``slow``. The selected
cases start three at a time when the module starts, and each test waits for its own.
"""

from __future__ import annotations

import concurrent.futures
import io
import os
import re
import struct
import subprocess
import sys
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tests import preloaded

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "errors.md"
SHRINK = ["data.limit=48", "data.image_size=67", "trainer.batch_size=16", "trainer.epochs=1"]


@dataclass(frozen=True)
class Case:
    """One row of docs/errors.md: ``doc`` is its input column; ``args`` the command line, with
    ``{name}`` standing for a file the fixture makes (see :func:`make_files`)."""

    doc: str
    args: tuple[str, ...]
    key: str
    message: str
    slow: bool = False
    code: int = 2


def case(doc: str, key: str, message: str, args: str | None = None, **kw) -> Case:
    return Case(doc, tuple((args or doc).split()), key, message, **kw)


CASES = [
    # -- types and ranges (the typed schema, then validate) ----------------------------------
    case("trainer.epochs=abc", "trainer.epochs", "trainer.epochs=abc: trainer.epochs expects"),
    case("trainer.epochs=0", "trainer.epochs", "trainer.epochs=0 must be a whole number >= 1"),
    case("trainer.epochs=-1", "trainer.epochs", "trainer.epochs=-1 must be a whole number >= 1"),
    case("trainer.batch_size=0", "trainer.batch_size", "trainer.batch_size=0 must be"),
    case(
        "trainer.steps_per_execution=0",
        "trainer.steps_per_execution",
        "trainer.steps_per_execution=0 must be",
    ),
    case("trainer.precision=fp8", "trainer.precision", "unknown trainer.precision 'fp8'"),
    case("trainer.jit_compile=maybe", "trainer.jit_compile", "unknown trainer.jit_compile"),
    case("trainer.strategy=tpu", "trainer.strategy", "unknown trainer.strategy 'tpu'"),
    case(
        "trainer.strategy=mirrored trainer.steps_per_execution=4",
        "trainer.steps_per_execution",
        "trainer.steps_per_execution=4 does not run under trainer.strategy=mirrored",
    ),
    case("trainer.cluster_timeout=0", "trainer.cluster_timeout", "trainer.cluster_timeout=0"),
    case("trainer.deterministic=maybe", "trainer.deterministic", "trainer.deterministic=maybe"),
    case("data.limit=0", "data.limit", "data.limit=0 must be a whole number >= 1 or null"),
    case("data.val_split=1.5", "data.val_split", "data.val_split=1.5 must be a fraction"),
    case("top_k=0", "top_k", "top_k=0 must be a whole number >= 1"),
    case("optimizer.learning_rate=-1", "optimizer.learning_rate", "optimizer.learning_rate=-1"),
    case("optimizer.learning_rate=nan", "optimizer.learning_rate", "optimizer.learning_rate=nan"),
    case("optimizer.learning_rate=abc", "optimizer.learning_rate", "optimizer.learning_rate="),
    # -- Hydra's own errors -----------------------------------------------------------------
    case("model=resnet9000", "model", "model=resnet9000: no such option in config group"),
    case("data=imagenet", "data", "data=imagenet: no such option in config group 'data'"),
    case("optimizer=rmsprop", "optimizer", "optimizer=rmsprop: no such option"),
    case("callbacks=huge", "callbacks", "callbacks=huge: no such option"),
    case("trainer.epochs=[", "trainer.epochs", "trainer.epochs=[: cannot parse this override"),
    case("trainer.epoch=5", "trainer.epoch", "trainer.epoch=5: no such key"),
    case("+trainer.nope=1", "trainer.nope", "trainer.nope: no such key"),
    case(
        "hydra.run.dir=/proc/x",
        "hydra.run.dir",
        "hydra.run.dir: cannot create the run directory /proc/x",
    ),
    case(
        "hydra.run.dir=<a file>/x",
        "hydra.run.dir",
        "hydra.run.dir: cannot create the run directory PATH (Not a directory)",
        args="hydra.run.dir={file}/x",
    ),
    # -- the task ---------------------------------------------------------------------------
    case("task=fly", "task", "unknown task 'fly'"),
    case("task=predict", "checkpoint", "task=predict needs checkpoint=PATH"),
    case(
        "task=predict checkpoint=<a .keras file>",
        "inputs",
        "task=predict needs inputs=FILE_OR_DIR",
        args="task=predict checkpoint={foreign_keras}",
    ),
    case(
        "task=predict checkpoint=missing.keras inputs=<an image>",
        "checkpoint",
        "checkpoint=missing.keras: file not found",
        args="task=predict checkpoint=missing.keras inputs={image}",
    ),
    case(
        "task=predict checkpoint=<a corrupt .keras file> inputs=<an image>",
        "checkpoint",
        "checkpoint=PATH: not a Keras model file",
        args="task=predict checkpoint={corrupt_keras} inputs={image}",
    ),
    case(
        "task=predict checkpoint=<a .keras file> inputs=missing",
        "inputs",
        "inputs=missing: no such image file or folder",
        args="task=predict checkpoint={foreign_keras} inputs=missing",
    ),
    case(
        "task=predict checkpoint=<a .keras file with a Lambda layer> inputs=<an image>",
        "checkpoint",
        "checkpoint=PATH: cannot load it",
        args="task=predict checkpoint={lambda_keras} inputs={image}",
        slow=True,
    ),
    # -- tracking ---------------------------------------------------------------------------
    case("tracking.uri=notaurl://x", "tracking.uri", "tracking.uri='notaurl://x' is not an"),
    case("tracking.uri=http://", "tracking.uri", "tracking.uri='http://' has no host"),
    case("tracking.experiment=../x", "tracking.experiment", "tracking.experiment='../x' is not"),
    # -- data -------------------------------------------------------------------------------
    case("data=folder", "data.path", "data=folder needs a folder: add data.path=DIR"),
    case("data=folder data.path=missing", "data.path", "data folder not found:"),
    case(
        "data=folder data.path=<an empty folder>",
        "data.path",
        "data folder PATH is empty",
        args="data=folder data.path={empty_dir}",
    ),
    case(
        "data=folder data.path=<a folder with one class>",
        "data.path",
        "data folder PATH has one class",
        args="data=folder data.path={one_class_dir}",
    ),
    case(
        "data=folder data.path=<a folder with a corrupt image>",
        "data.path",
        "data.path: PATH is not a readable image",
        args="data=folder data.path={corrupt_dir}",
    ),
    case(
        "data=folder data.path=<a folder with a truncated JPEG>",
        "data.path",
        "data.path: PATH is not a readable image",
        args="data=folder data.path={truncated_dir}",
    ),
    case(
        "data=folder data.path=<a folder with a PNG whose pixels are corrupt>",
        "data.path",
        "data.path=PATH: PATH cannot be decoded",
        # (steps run eagerly: the error comes from the data, not from a traced step)
        args="data=folder data.path={bad_png_dir} callbacks=minimal trainer.run_eagerly=true "
        + " ".join(SHRINK),
        slow=True,
    ),
    case(
        "data.image_size=40",
        "data.image_size",
        "model 'alexnet' needs an input of at least 67x67 pixels",
        args="data.image_size=40 callbacks=none",
        slow=True,
    ),
    case(
        "model.options.fc_units=0",
        "model.options.fc_units",
        "model.options.fc_units must be a positive whole number, got 0",
        args="model.options.fc_units=0 callbacks=none",
        slow=True,
    ),
    # -- model weights ----------------------------------------------------------------------
    case(
        "model.weights=missing.keras",
        "model.weights",
        "model.weights=missing.keras: file not found",
    ),
    case(
        "model.weights=<a corrupt .keras file>",
        "model.weights",
        "model.weights=PATH: not a Keras model file (File is not a zip file)",
        args="model.weights={corrupt_keras}",
    ),
    case(
        "model.weights=<a .keras file that is not a model>",
        "model.weights",
        "model.weights=PATH: not a Keras model file (a zip without config.json)",
        args="model.weights={zip_keras}",
    ),
    case(
        "model.weights=<a corrupt .weights.h5 file>",
        "model.weights",
        "model.weights=PATH: not an HDF5 weights file",
        args="model.weights={corrupt_h5}",
    ),
    case(
        "model.weights=<a .keras file of another architecture>",
        "model.weights",
        "model.weights=PATH: the weights do not fit model 'alexnet'",
        args="model.weights={foreign_keras} callbacks=none " + " ".join(SHRINK),
        slow=True,
    ),
    # -- callbacks --------------------------------------------------------------------------
    case("+callbacks.mine=3", "callbacks.mine", "callbacks.mine must be a dict with a _target_"),
    case(
        "+callbacks.mine._target_=nopkg.Mine",
        "callbacks.mine",
        "callbacks.mine._target_=nopkg.Mine cannot be imported: No module named 'nopkg'",
    ),
    case(
        "+callbacks.mine._target_=mypkg.Mien",
        "callbacks.mine",
        "callbacks.mine._target_=mypkg.Mien cannot be imported",
        slow=True,
    ),
    case(
        "+callbacks.mine._target_=mypkg.Mine +callbacks.mine.evry=3",
        "callbacks.mine",
        "callbacks.mine (mypkg.Mine): got an unexpected keyword argument 'evry'",
        slow=True,
    ),
    case(
        "+callbacks.mine._target_=mypkg.Mine +callbacks.mine.every=0",
        "callbacks.mine",
        "callbacks.mine (mypkg.Mine) cannot be built: ValueError: every must be >= 1",
        slow=True,
    ),
    case(
        "callbacks.early_stopping.patience=abc",
        "callbacks.early_stopping.patience",
        "callbacks.early_stopping.patience=abc: callbacks.early_stopping.patience expects a "
        "whole number",
        slow=True,
    ),
    case(
        "callbacks=full callbacks.lr_schedule.schedule=nope",
        "callbacks.lr_schedule",
        "callbacks.lr_schedule (callbacks.lr_schedule.LRSchedule) cannot be built: "
        "ValueError: unknown schedule 'nope'",
        slow=True,
    ),
]

# Tests that read what a case left behind, and the case each one needs run.
NEEDS = {
    "test_failed_run_carries_the_error_and_run_log_the_trace": (
        "data=folder data.path=<a folder with a PNG whose pixels are corrupt>"
    ),
    "test_run_log_holds_the_trace_of_a_config_error": "trainer.epochs=0",
}

MYPKG = '''
import keras


class Mine(keras.callbacks.Callback):
    """A user's callback with one option."""

    def __init__(self, every: int = 1):
        super().__init__()
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.every = every
'''


def make_files(root: Path) -> dict[str, str]:
    """The files the cases name: folders of images, broken and foreign model files."""
    import keras
    from PIL import Image

    rng = np.random.default_rng(0)

    def image(path: Path, fmt: str = "PNG") -> bytes:
        path.parent.mkdir(parents=True, exist_ok=True)
        pixels = (rng.random((16, 16, 3)) * 255).astype("uint8")
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, fmt)
        path.write_bytes(buffer.getvalue())
        return buffer.getvalue()

    files: dict[str, str] = {}
    (root / "empty").mkdir(parents=True)
    (root / "empty" / "cats").mkdir()
    files["empty_dir"] = str(root / "empty")
    for i in range(3):
        image(root / "one" / "cats" / f"{i}.png")
    files["one_class_dir"] = str(root / "one")
    for name in ("cats", "dogs"):
        for i in range(3):
            image(root / "corrupt" / name / f"{i}.png")
    (root / "corrupt" / "dogs" / "broken.png").write_bytes(b"not an image at all")
    files["corrupt_dir"] = str(root / "corrupt")
    # A JPEG whose header is fine and whose data stops half way: only decoding finds it.
    for name in ("cats", "dogs"):
        for i in range(24):
            image(root / "truncated" / name / f"{i}.jpg", "JPEG")
    whole = (root / "truncated" / "dogs" / "0.jpg").read_bytes()
    (root / "truncated" / "dogs" / "0.jpg").write_bytes(whole[: len(whole) // 2])
    files["truncated_dir"] = str(root / "truncated")
    # A PNG whose pixel data is noise with a valid checksum: PIL's verify passes, TensorFlow's
    # decoder fails at the first validation, after the MLflow run started. The job's own split
    # (seed 42, data.limit=48) says which file validation reads.
    from trainkit.data.folder import list_images
    from trainkit.data.split import split_indices

    for name in ("cats", "dogs"):
        for i in range(24):
            image(root / "bad_png" / name / f"{i}.png")
    paths, labels, _ = list_images(root / "bad_png")
    target = Path(paths[split_indices(labels, 0.15, 0.15, limit=48, seed=42)["val"][0]])
    broken = bytearray(target.read_bytes())
    start = broken.index(b"IDAT") - 4
    (size,) = struct.unpack(">I", broken[start : start + 4])
    noise = bytes(rng.integers(0, 256, size, dtype=np.uint8))
    broken[start + 8 : start + 8 + size] = noise
    crc = struct.pack(">I", zlib.crc32(b"IDAT" + noise) & 0xFFFFFFFF)
    broken[start + 8 + size : start + 12 + size] = crc
    target.write_bytes(bytes(broken))
    files["bad_png_dir"] = str(root / "bad_png")
    image(root / "photo.png")
    files["image"] = str(root / "photo.png")

    (root / "corrupt.keras").write_bytes(b"\x00garbage" * 64)
    files["corrupt_keras"] = str(root / "corrupt.keras")
    with zipfile.ZipFile(root / "notes.keras", "w") as archive:
        archive.writestr("notes.txt", "not a model")
    files["zip_keras"] = str(root / "notes.keras")
    (root / "corrupt.weights.h5").write_bytes(b"garbage" * 64)
    files["corrupt_h5"] = str(root / "corrupt.weights.h5")

    foreign = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="other")])
    foreign.save(root / "foreign.keras")
    files["foreign_keras"] = str(root / "foreign.keras")
    with_lambda = keras.Sequential(
        [keras.Input((67, 67, 3)), keras.layers.Lambda(lambda x: x * 2), keras.layers.Flatten()]
    )
    with_lambda.save(root / "lambda.keras")
    files["lambda_keras"] = str(root / "lambda.keras")

    (root / "a_file").write_text("a file, not a folder")
    files["file"] = str(root / "a_file")
    (root / "pkgs" / "mypkg").mkdir(parents=True)
    (root / "pkgs" / "mypkg" / "__init__.py").write_text(MYPKG)
    return files


def run_case(case: Case, cwd: Path, files: dict[str, str]) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "MPLBACKEND": "Agg",
        "PYTHONPATH": str(Path(files["file"]).parent / "pkgs"),
    }
    env.pop("HYDRA_FULL_ERROR", None)
    args = [a.format(**files) for a in case.args]
    if not any(a.startswith("hydra.run.dir=") for a in args):
        args.append(f"hydra.run.dir={cwd / 'run'}")
    cwd.mkdir(parents=True, exist_ok=True)
    return preloaded.run(
        [sys.executable, str(ROOT / "run.py"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def case_id(case: Case) -> str:
    return re.sub(r"[^\w.=+-]+", "_", case.doc).strip("_")


class Results:
    """The selected cases, started three at a time when the module starts; each test waits
    only for its own case (so no test waits for all of them)."""

    def __init__(self, todo: list[Case], base: Path, files: dict[str, str]) -> None:
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=3)
        self.runs = {}
        for i, c in enumerate(todo):
            cwd = base / f"case{i}"
            self.runs[c.doc] = (self.pool.submit(run_case, c, cwd, files), cwd)

    def __getitem__(self, doc: str) -> tuple[subprocess.CompletedProcess, Path]:
        future, cwd = self.runs[doc]
        return future.result(), cwd


@pytest.fixture(scope="module")
def results(request, tmp_path_factory) -> Iterator[Results]:
    selected = set()
    for item in request.session.items:
        if item.module is not sys.modules[__name__]:
            continue
        if hasattr(item, "callspec") and "case" in item.callspec.params:
            selected.add(item.callspec.params["case"].doc)
        if item.originalname in NEEDS:
            selected.add(NEEDS[item.originalname])
    base = tmp_path_factory.mktemp("errors")
    files = make_files(base / "files")
    started = Results([c for c in CASES if c.doc in selected], base, files)
    yield started
    started.pool.shutdown(wait=True, cancel_futures=True)


@pytest.mark.parametrize(
    "case",
    [pytest.param(c, marks=[pytest.mark.slow] if c.slow else [], id=case_id(c)) for c in CASES],
)
def test_bad_input_is_one_line(case: Case, results):
    result, cwd = results[case.doc]
    assert result.returncode == case.code, result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr[-2000:]
    message = errors[0].removeprefix("error: ")
    assert re.match(re.escape(case.message).replace("PATH", r"\S+"), message), message
    assert case.key in message, message
    assert documented()[case.doc][0] == case.message  # the documented message is the real one


def documented() -> dict[str, tuple[str, str]]:
    """docs/errors.md's table: input -> (message start, fix)."""
    rows = {}
    for line in DOC.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 3 or not cells[0].startswith("`") or cells[0].startswith("`message"):
            continue
        rows[cells[0].strip("`")] = (cells[1].strip("`"), cells[2])
    return rows


def test_every_documented_row_is_tested():
    rows = set(documented())
    tested = {c.doc for c in CASES}
    assert rows - tested == set(), "rows of docs/errors.md without a test"
    assert tested - rows == set(), "tested cases missing from docs/errors.md"
    assert len(rows) >= 30


@pytest.mark.slow
def test_failed_run_carries_the_error_and_run_log_the_trace(results):
    """A bad input found after the MLflow run started: the run ends FAILED with the message as
    its ``trainkit.error`` tag, and run.log holds the trace at DEBUG."""
    from mlflow import MlflowClient

    result, cwd = results[NEEDS["test_failed_run_carries_the_error_and_run_log_the_trace"]]
    message = next(x for x in result.stderr.splitlines() if x.startswith("error:"))[7:]
    client = MlflowClient(tracking_uri=f"sqlite:///{cwd}/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("trainkit").experiment_id])
    assert run.info.status == "FAILED"
    assert run.data.tags["trainkit.error"] == message
    log = (cwd / "run" / "run.log").read_text()
    assert "Traceback" in log and message in log


def test_run_log_holds_the_trace_of_a_config_error(results):
    result, cwd = results[NEEDS["test_run_log_holds_the_trace_of_a_config_error"]]
    log = (cwd / "run" / "run.log").read_text()
    assert "DEBUG" in log and "Traceback" in log and "trainer.epochs=0 must be" in log


def test_a_config_error_ends_before_tensorflow_is_imported(tmp_path):
    """Range checks run before the job imports TensorFlow: a typo costs a second, not five."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", str(ROOT / "run.py"), "trainer.epochs=0"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines()}
    assert "trainkit.config.schema" in imported  # the check ran (and -X importtime worked)
    assert "tensorflow" not in imported and "keras" not in imported
