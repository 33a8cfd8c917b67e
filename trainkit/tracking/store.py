"""One MLflow run of a job: create or resume it, its sweep's parent run, reachability, end.

Everything talks to the store through an explicit ``MlflowClient(uri)``: no active run and no
global tracking URI, so two jobs in one process (a Hydra multirun) cannot mix their runs. The
one exception is logging the model, which MLflow only does through the global URI (see
:func:`log_keras_model`).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainkit.tracking import sqlite_template
from trainkit.tracking.files import PARENT_RUN_ID_FILE, RUN_ID_FILE
from trainkit.tracking.flatten import MAX_TAG_VALUE, metric_key, redact_uri
from trainkit.tracking.store_process import (
    START_AT_POINTS,
    StoreProcess,
    StoreProcessError,
    wanted,
)

# MLflow (1 s of imports) is imported where it is used, not here: a job's new run is opened by
# the writer thread after the first steps, so the import and the store's opening stay off the
# start-up's path.
if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger("trainkit.tracking")
# "Creating initial MLflow database tables..." at a new store's first job: not what a user reads.
for _name in ("mlflow.store.db.utils", "alembic.runtime.migration"):
    logging.getLogger(_name).setLevel(logging.WARNING)


class _NoRenameNotice(logging.Filter):
    """TensorFlow's SavedModel writer says, through absl at INFO, per exported function, that
    it renames the variable inputs of Keras layers' names: nothing a user can act on."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "unsupported characters which will be renamed" not in record.getMessage()


logging.getLogger("absl").addFilter(_NoRenameNotice())

# MLflow 3's UI opens an experiment on its GenAI view (traces, prompts) unless this experiment
# tag says it is for model training (mlflow/server/js: ExperimentKind.CUSTOM_MODEL_DEVELOPMENT).
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING_KIND = "custom_model_development"

SWEEP_TAG = "trainkit.sweep_dir"
ROLE_TAG = "trainkit.role"

# Errors that retrying cannot fix (a bad key, a param changed on resume): drop, do not spool.
_CLIENT_ERRORS = {
    "INVALID_PARAMETER_VALUE",
    "RESOURCE_ALREADY_EXISTS",
    "INVALID_STATE",
    "BAD_REQUEST",
    "RESOURCE_DOES_NOT_EXIST",
}


def is_client_error(exc: BaseException) -> bool:
    from mlflow.exceptions import MlflowException

    return isinstance(exc, MlflowException) and exc.error_code in _CLIENT_ERRORS


@dataclass
class RunSpec:
    """What the job asked for; JSON-able so the spool can carry it to ``replay``."""

    uri: str
    experiment: str = "trainkit"
    run_name: str | None = None  # the user's own (tracking.run_name), or a sweep job's
    name_hint: str | None = None  # else this, made unique in the experiment (-2, -3 ...)
    tags: dict[str, str] = field(default_factory=dict)
    run_dir: str | None = None
    sweep_dir: str | None = None
    system_metrics: bool = False
    artifact_location: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "uri": self.uri,
            "experiment": self.experiment,
            "run_name": self.run_name,
            "name_hint": self.name_hint,
            "tags": self.tags,
            "run_dir": self.run_dir,
            "sweep_dir": self.sweep_dir,
            "artifact_location": self.artifact_location,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunSpec:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


def default_run_name(model: str, stack: str, started: float | None = None) -> str:
    """``alexnet-full-1127-1405``: what ran and when it started (local time), readable in the
    runs list where MLflow's random names (drawn from the job's seeded ``random``) were all
    alike."""
    when = time.strftime("%m%d-%H%M", time.localtime(started))
    parts = [p for p in (model, stack) if p and p != "custom"]
    return "-".join([*parts, when]).replace(" ", "_")


def run_description(
    model: str | None, data: str | None, stack: str | None, command: str | None
) -> str:
    """The run's description (``mlflow.note.content``, markdown): what ran, and how to run it
    again."""
    lines = []
    what = [f"**{model}**" if model else "a model"]
    if data:
        what.append(f"on **{data}**")
    if stack and stack != "custom":
        what.append(f"with the **{stack}** callback stack")
    lines.append("Trained " + " ".join(what) + ".")
    if command:
        lines += ["", "```", command, "```"]
    return "\n".join(lines)


def probe(uri: str, timeout: float = 2.0) -> bool:
    """Does the store answer? For HTTP stores a quick ``/health`` GET, because MLflow's own
    client retries a refused connection with exponential backoff for minutes."""
    if not uri.startswith(("http://", "https://")):
        return True
    import requests

    try:
        requests.get(uri.rstrip("/") + "/health", timeout=timeout)
    except requests.RequestException:
        return False
    return True  # any answer, 401 included: the server is there


def unreachable_message(uri: str) -> str:
    return (
        f"MLflow tracking store {redact_uri(uri)} does not answer: training goes on and the "
        "points are kept in the run's mlflow_spool.jsonl until it does; start the server "
        "(mlflow server ...) or fix tracking.uri"
    )


def _read_id(path: Path) -> str | None:
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return text or None


def open_client(uri: str) -> MlflowClient:
    """``MlflowClient(uri)``, one process at a time for a SQLite file.

    The jobs of a parallel sweep (joblib, submitit) open a new SQLite store at the same moment,
    and MLflow's schema creation, run when the client is built, is not safe against itself
    (``duplicate column name``, ``table _alembic_tmp_... already exists``): a lock file beside
    the database lets the first create the tables, the others then find them.
    """
    from mlflow import MlflowClient

    if not uri.startswith("sqlite:///"):
        return MlflowClient(uri)
    import fcntl

    database = Path(uri.removeprefix("sqlite:///")).expanduser()
    database.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{database}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            sqlite_template.seed(database)  # a new store: copied, not migrated (seconds saved)
            client = MlflowClient(uri)
            client.search_experiments(max_results=1)  # the tables exist once this returns
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return client


class TrackedRun:
    """The run of one job in one store. ``open()`` creates or resumes it."""

    def __init__(self, spec: RunSpec) -> None:
        self.spec = spec
        self._client: MlflowClient | None = None
        self._client_lock = threading.Lock()
        self.run_id: str | None = None
        self.experiment_id: str | None = None
        self.parent_run_id: str | None = None
        self.resumed = False
        self.last_step = 0
        # the keys the store has at last_step: a resumed epoch's end logs the others there
        self.last_keys: frozenset[str] = frozenset()
        self.logged_params: dict[str, str] = {}
        self._monitor: Any = None
        self._keys: dict[str, str] = {}
        self._lock = threading.Lock()
        self._artifact_dir: Path | None = None
        self._artifact_dir_known = False
        self._helper: StoreProcess | None = None
        self._helper_failed = False

    @property
    def client(self) -> MlflowClient:
        """The store's client, made at first use (by the writer thread, for a new run)."""
        with self._client_lock:
            if self._client is None:
                self._client = open_client(self.spec.uri)
            return self._client

    @property
    def is_open(self) -> bool:
        return self.run_id is not None

    @property
    def run_id_file(self) -> Path | None:
        return Path(self.spec.run_dir) / RUN_ID_FILE if self.spec.run_dir else None

    @property
    def resuming(self) -> bool:
        """Whether ``open()`` will try to resume a run (one is named in the run directory)."""
        return (
            self.run_id is None
            and self.run_id_file is not None
            and bool(_read_id(self.run_id_file))
        )

    def reachable(self) -> bool:
        return probe(self.spec.uri)

    # -- lifecycle -----------------------------------------------------------------------

    def open(self) -> str:
        """Create the run, or resume the one named in ``<run_dir>/mlflow_run_id``."""
        with self._lock:
            if self.run_id is not None:
                return self.run_id
            self.experiment_id = self._experiment_id()
            previous = _read_id(self.run_id_file) if self.run_id_file else None
            resumed = bool(previous) and self._resume(previous)
            run_id = previous if resumed else self._create()
            self.run_id = run_id
            if self.spec.system_metrics:
                self._start_system_metrics()
            return run_id

    def _experiment_id(self) -> str:
        from mlflow.exceptions import MlflowException

        experiment = self.client.get_experiment_by_name(self.spec.experiment)
        if experiment is not None:
            if experiment.lifecycle_stage == "deleted":
                self.client.restore_experiment(experiment.experiment_id)
            if EXPERIMENT_KIND_TAG not in experiment.tags:  # a kind the user chose stays
                self.client.set_experiment_tag(
                    experiment.experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND
                )
            return experiment.experiment_id
        try:
            return self.client.create_experiment(
                self.spec.experiment,
                artifact_location=self._artifact_location(),
                tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING_KIND},
            )
        except MlflowException as exc:  # another job of the sweep created it first
            experiment = self.client.get_experiment_by_name(self.spec.experiment)
            if experiment is None:
                raise exc from None
            return experiment.experiment_id

    def _artifact_location(self) -> str | None:
        """Artifacts of a SQLite store go next to its file, not into whatever the cwd is
        (MLflow's default, ``./mlruns``); a server decides for itself."""
        if self.spec.artifact_location:
            return self.spec.artifact_location
        if self.spec.uri.startswith("sqlite:///"):
            database = Path(self.spec.uri.removeprefix("sqlite:///")).expanduser()
            if not database.is_absolute():
                database = Path.cwd() / database
            experiment = self.spec.experiment.replace("/", "_")
            return (database.resolve().parent / "mlruns" / experiment).as_uri()
        return None

    def _resume(self, run_id: str) -> bool:
        from mlflow.entities import RunStatus
        from mlflow.exceptions import MlflowException
        from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

        try:
            run = self.client.get_run(run_id)
        except MlflowException as exc:
            if is_client_error(exc):
                return False
            raise
        if run.info.lifecycle_stage != "active":
            return False
        self.resumed = True
        self.experiment_id = run.info.experiment_id
        self.parent_run_id = run.data.tags.get(MLFLOW_PARENT_RUN_ID)
        self.logged_params = dict(run.data.params)
        latest = [m for m in run.data._metric_objs if not m.key.startswith("system/")]
        self.last_step = max((m.step for m in latest), default=0)
        self.last_keys = frozenset(m.key for m in latest if m.step == self.last_step)
        self.client.update_run(run_id, status=RunStatus.to_string(RunStatus.RUNNING))
        if self.parent_run_id:
            self._parent_running()
        return True

    def _create(self) -> str:
        from mlflow.tracking.context.registry import resolve_tags
        from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

        tags = dict(self.spec.tags)
        if self.spec.sweep_dir:
            self.parent_run_id = self._sweep_parent()
            tags[MLFLOW_PARENT_RUN_ID] = self.parent_run_id
            tags[SWEEP_TAG] = self.spec.sweep_dir
            self._parent_running()
        # The same context tags mlflow.start_run adds (user, source, git commit).
        tags = {k: str(v)[:MAX_TAG_VALUE] for k, v in resolve_tags(tags).items()}
        # Always named here: left to MLflow, the name is drawn from Python's ``random``, which
        # the job has seeded, so every run got the same one (and the draw moved the seeded
        # sequence on, so what the seed reproduced depended on the MLflow callback).
        name = self.spec.run_name or self._unique_name(self.spec.name_hint or "run")
        tags[MLFLOW_RUN_NAME] = name
        run = self.client.create_run(self.experiment_id, tags=tags, run_name=name)
        if self.run_id_file is not None:
            self.run_id_file.parent.mkdir(parents=True, exist_ok=True)
            self.run_id_file.write_text(run.info.run_id + "\n", encoding="utf-8")
        return run.info.run_id

    def _unique_name(self, base: str) -> str:
        """``base``, or ``base-2``, ``base-3`` ... if a run of the experiment has that name."""
        from mlflow.exceptions import MlflowException

        prefix = base.replace("'", "")
        try:
            found = self.client.search_runs(
                [self.experiment_id],
                filter_string=f"attributes.run_name LIKE '{prefix}%'",
                max_results=1000,
            )
        except MlflowException:
            return base
        taken = {run.info.run_name for run in found}
        name, n = base, 2
        while name in taken:
            name, n = f"{base}-{n}", n + 1
        return name

    def _sweep_parent(self) -> str:
        """The parent run of the sweep, created by the first job to get here.

        The jobs of a sweep may run in parallel processes: the marker file in the sweep dir,
        created with O_EXCL, elects the one that creates the parent; the others wait for the id.
        """
        sweep_dir = Path(self.spec.sweep_dir or ".")
        marker = sweep_dir / PARENT_RUN_ID_FILE
        sweep_dir.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                run_id = self._wait_for_id(marker)
                if run_id and self._exists(run_id):
                    return run_id
                marker.unlink(missing_ok=True)  # stale: its creator died or the run is gone
                continue
            try:
                run_id = self._find_parent() or self._create_parent(sweep_dir)
            except BaseException:
                os.close(fd)
                marker.unlink(missing_ok=True)
                raise
            os.write(fd, (run_id + "\n").encode())
            os.close(fd)
            return run_id
        return self._find_parent() or self._create_parent(sweep_dir)

    @staticmethod
    def _wait_for_id(marker: Path, timeout: float = 30.0) -> str | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run_id = _read_id(marker)
            if run_id:
                return run_id
            time.sleep(0.1)
        return None

    def _exists(self, run_id: str) -> bool:
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_run(run_id).info.lifecycle_stage == "active"
        except MlflowException:
            return False

    def _find_parent(self) -> str | None:
        found = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{SWEEP_TAG}` = '{self.spec.sweep_dir}' "
            f"and tags.`{ROLE_TAG}` = 'sweep'",
            max_results=1,
        )
        return found[0].info.run_id if found else None

    def _create_parent(self, sweep_dir: Path) -> str:
        from mlflow.tracking.context.registry import resolve_tags
        from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME, MLFLOW_RUN_NOTE

        tags = resolve_tags({SWEEP_TAG: self.spec.sweep_dir, ROLE_TAG: "sweep"})
        name = f"sweep {sweep_dir.parent.name}/{sweep_dir.name}"
        tags[MLFLOW_RUN_NAME] = name
        tags[MLFLOW_RUN_NOTE] = (
            f"A Hydra sweep: one child run per job, in `{self.spec.sweep_dir}`. The artifacts "
            "`sweep_comparison.csv`, `.md` and `.png` compare the jobs that have ended."
        )
        run = self.client.create_run(self.experiment_id, tags=tags, run_name=name)
        return run.info.run_id

    def _parent_running(self) -> None:
        if self.parent_run_id:
            self.client.update_run(self.parent_run_id, status="RUNNING")

    def _start_system_metrics(self) -> None:
        try:
            from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

            self._monitor = SystemMetricsMonitor(
                self.run_id, resume_logging=self.resumed, tracking_uri=self.spec.uri
            )
            self._monitor.start()
        except Exception as exc:  # psutil missing, for one
            log.warning("MLflow system metrics are off: %s (pip install psutil)", exc)
            self._monitor = None

    def end(self, status: str) -> None:
        self.close_helper()
        if self._monitor is not None:
            self._monitor.finish()
            self._monitor = None
        if self.run_id is None:
            return
        self.client.set_terminated(self.run_id, status)
        if self.parent_run_id:
            # The sweep's run shows how the last job ended; a failed job keeps it FAILED.
            parent = self.client.get_run(self.parent_run_id)
            failed = parent.data.tags.get("trainkit.failed_jobs")
            if status == "FAILED":
                count = int(failed or 0) + 1
                self.client.set_tag(self.parent_run_id, "trainkit.failed_jobs", str(count))
            self.client.set_terminated(self.parent_run_id, "FAILED" if failed else status)
            self._compare_sweep()

    def _compare_sweep(self) -> None:
        """Refresh the parent run's comparison of the jobs that have ended (never raises)."""
        from trainkit.tracking.sweep import log_sweep_comparison

        try:
            log_sweep_comparison(self.client, self.parent_run_id, self.spec.sweep_dir)
        except Exception as exc:
            log.warning("MLflow: the sweep comparison failed: %s: %s", type(exc).__name__, exc)

    # -- writes --------------------------------------------------------------------------

    def log_points(self, points: list[tuple[str, float, int, int]]) -> None:
        """Write ``(key, value, step, ms)`` points; a large batch to a store on this machine
        goes through the helper process (:mod:`trainkit.tracking.store_process`)."""
        from mlflow.entities import Metric

        keys = self._keys
        named = []
        for k, v, s, t in points:
            key = keys.get(k)
            if key is None:
                key = keys[k] = metric_key(k)
            named.append((key, v, s, t))
        helper = self._helper_for(len(named))
        if helper is not None:
            try:
                helper.log_batch(self.run_id, named)
                return
            except StoreProcessError:
                self._helper, self._helper_failed = None, True  # in-process from now on
                raise
        # In the job's process, MLflow's client and its one engine, as for params and tags.
        # With sqlite_metrics' engine here too, one suite run in four (2026-11-28) had a tiny
        # job 20 s slower (the busy timeout) and its points and tags left in the spool; not
        # understood, so not done. Long fits write through the helper process, which uses it.
        metrics = [Metric(key, v, t, s) for key, v, s, t in named]
        self.client.log_batch(self.run_id, metrics=metrics, synchronous=True)

    def _helper_for(self, points: int) -> StoreProcess | None:
        if self._helper is not None:
            if self._helper.alive:
                return self._helper
            self._helper, self._helper_failed = None, True  # died between two batches
        if points < START_AT_POINTS:
            return None
        return self.start_helper()

    def start_helper(self) -> StoreProcess | None:
        """Start the helper process now, if this store wants one (a long fit asks at its start,
        so that the helper's own start-up overlaps the first trace)."""
        if self._helper is None and not self._helper_failed and wanted(self.spec.uri):
            try:
                self._helper = StoreProcess(self.spec.uri)
            except OSError:
                self._helper_failed = True
        return self._helper

    @property
    def helper(self) -> StoreProcess | None:
        """The helper process writing this run's metrics, if one runs."""
        return self._helper

    def close_helper(self) -> None:
        """Stop the helper process, if one was started (after its last batch)."""
        helper, self._helper = self._helper, None
        if helper is not None:
            helper.close()

    def log_params(self, params: dict[str, str]) -> None:
        """Log params; on a resumed run, values that changed become ``resumed.<key>`` tags.

        MLflow refuses to change a param's value (the whole batch fails), so a param keeps the
        value of the run's first job, and a rerun that changed it (``trainer.epochs=10`` after
        5) says so with the tag ``resumed.trainer.epochs=10``: tags may change, so a third run
        overwrites it with its own value.
        """
        from mlflow.entities import Param

        fresh = {k: v for k, v in params.items() if k not in self.logged_params}
        changed = {
            f"resumed.{k}": v
            for k, v in params.items()
            if k in self.logged_params and self.logged_params[k] != v
        }
        if fresh:
            self.client.log_batch(self.run_id, params=[Param(k, v) for k, v in fresh.items()])
            self.logged_params.update(fresh)
        if changed:
            self.set_tags(changed)

    def set_tags(self, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(k, str(v)[:MAX_TAG_VALUE]) for k, v in tags.items()]
        self.client.log_batch(self.run_id, tags=items)

    def log_artifact(self, local_path: str, artifact_dir: str | None) -> None:
        path = Path(local_path)
        if path.is_dir():
            self.client.log_artifacts(self.run_id, str(path), artifact_dir)
        elif path.exists():
            if path.suffix in LINKED_SUFFIXES and self._link_artifact(path, artifact_dir):
                return
            self.client.log_artifact(self.run_id, str(path), artifact_dir)

    def artifact_dir(self) -> Path | None:
        """The run's artifact folder when the artifact store is a local folder, else None."""
        if self.run_id is None:
            return None
        if not self._artifact_dir_known:
            self._artifact_dir = local_path(self.client.get_run(self.run_id).info.artifact_uri)
            self._artifact_dir_known = True
        return self._artifact_dir

    def _link_artifact(self, path: Path, artifact_dir: str | None) -> bool:
        """Log ``path`` as a hard link in a local artifact store: the store holds the same
        bytes as the run directory, not a second copy of them (a checkpoint is hundreds of MB).

        Only for files that are replaced, never rewritten in place (checkpoints: written under
        a temporary name and renamed, :mod:`callbacks.checkpoint`), so the store's name keeps
        the bytes it was given. False (copy instead) for a remote store or another file system.
        """
        root = self.artifact_dir()
        if root is None:
            return False
        target = root / artifact_dir / path.name if artifact_dir else root / path.name
        temporary = target.with_name(f".tmp-{target.name}")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            temporary.unlink(missing_ok=True)
            os.link(path, temporary)
            os.replace(temporary, target)
        except OSError as exc:
            log.debug("MLflow: cannot link %s into %s (%s): copying it", path, root, exc)
            with contextlib.suppress(OSError):
                temporary.unlink(missing_ok=True)
            return False
        return True

    def stored_paths(self, model_ids: list[str]) -> list[Path] | None:
        """The local folders that hold this run's artifacts and its logged models' (None for a
        remote artifact store): what :mod:`trainkit.disk` counts as the store's growth."""
        root = self.artifact_dir()
        if root is None:
            return None
        paths = [root]
        for model_id in model_ids:
            location = local_path(self.client.get_logged_model(model_id).artifact_location)
            if location is None:
                return None
            paths.append(location)
        return paths

    def stored_bytes(self, model_ids: list[str]) -> int:
        """Bytes of this run's artifacts and its logged models' as the store lists them (any
        store, a server's included; a hard link counts in full)."""
        total = _listed_bytes(lambda p: self.client.list_artifacts(self.run_id, p))
        for model_id in model_ids:
            total += _listed_bytes(
                lambda p, m=model_id: self.client.list_logged_model_artifacts(m, p)
            )
        return total


# Files that are only ever replaced by a rename (checkpoints): logged into a local artifact
# store as a hard link (TrackedRun._link_artifact).
LINKED_SUFFIXES = (".keras", ".h5")


def local_path(uri: str | None) -> Path | None:
    """The folder of a ``file:`` (or plain path) artifact URI; None for a remote one."""
    if not uri:
        return None
    if uri.startswith("file:"):
        from urllib.parse import unquote, urlparse

        return Path(unquote(urlparse(uri).path))
    if "://" in uri or uri.startswith(("mlflow-artifacts:", "models:", "runs:")):
        return None
    return Path(uri)


def _listed_bytes(list_dir: Any, path: str | None = None) -> int:
    total = 0
    for info in list_dir(path):
        total += _listed_bytes(list_dir, info.path) if info.is_dir else int(info.file_size or 0)
    return total


_GLOBAL_URI_LOCK = threading.Lock()


@contextlib.contextmanager
def global_tracking_uri(uri: str) -> Iterator[None]:
    """MLflow's model logging resolves the store from the global URI: point it at ours briefly."""
    import mlflow

    with _GLOBAL_URI_LOCK:
        previous_env = os.environ.get("MLFLOW_TRACKING_URI")
        previous = mlflow.get_tracking_uri()
        mlflow.set_tracking_uri(uri)
        try:
            yield
        finally:
            mlflow.set_tracking_uri(previous)
            if previous_env is None:
                os.environ.pop("MLFLOW_TRACKING_URI", None)
            else:
                os.environ["MLFLOW_TRACKING_URI"] = previous_env


class _KerasFlavor:
    """``mlflow.keras`` writing the model as a TensorFlow SavedModel (``save_exported_model``).

    A ``.keras`` file names trainkit's own layers (``Preprocess``, ``AttentionPool2d`` ...),
    which Keras can only rebuild in a Python that imported ``trainkit.models`` first: neither
    ``mlflow.keras.load_model`` nor ``mlflow.pyfunc.load_model`` imports anything of ours. The
    SavedModel holds the traced graph and the weights, so both load it in any Python with
    TensorFlow, without trainkit, and predict exactly as the model did.

    Two fixes to MLflow 3.17's ``mlflow.keras.save_model``: it writes the input example before
    it creates the model directory (FileNotFoundError on Keras 3), and its exporter prints the
    endpoint listing to stdout (from a background thread, into the job's output).
    """

    __name__ = "mlflow.keras"

    @staticmethod
    def save_model(path: str, **kwargs: Any) -> Any:
        import mlflow.keras
        import mlflow.keras.save as keras_save

        kwargs.pop("validate_serving_input", None)
        os.makedirs(path, exist_ok=True)
        with _QUIET_EXPORT:
            original = keras_save._export_keras_model
            keras_save._export_keras_model = _export_quietly
            try:
                return mlflow.keras.save_model(path=path, save_exported_model=True, **kwargs)
            finally:
                keras_save._export_keras_model = original


_QUIET_EXPORT = threading.Lock()


def _export_quietly(model: Any, path: str, signature: Any) -> None:
    """``mlflow.keras.save._export_keras_model`` without the listing it prints."""
    import keras
    import tensorflow as tf

    specs = []
    for schema in signature.inputs.to_dict():
        shape = [None if size == -1 else size for size in schema["tensor-spec"]["shape"]]
        specs.append(tf.TensorSpec(shape=shape, dtype=schema["tensor-spec"]["dtype"]))
    archive = keras.export.ExportArchive()
    # No archive.track(model): the endpoint already tracks the variables it reads, as
    # TensorFlow variables; tracking the model adds its Keras variables, which TensorFlow
    # cannot tell are the same, and the SavedModel would hold every weight twice.
    archive.add_endpoint(name="serve", fn=model.call, input_signature=specs)
    archive.write_out(path, verbose=False)


@functools.cache
def pip_requirements() -> tuple[str, ...]:
    """What the logged model needs, computed once per process: MLflow's own inference loads
    the model again in a subprocess to see what it imports (seconds per run)."""
    from importlib.metadata import PackageNotFoundError, version

    requirements = []
    for name in ("mlflow", "keras", "tensorflow-cpu", "tensorflow", "numpy"):
        try:
            requirements.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            continue
    if any(r.startswith("tensorflow-cpu==") for r in requirements):
        requirements = [r for r in requirements if not r.startswith("tensorflow==")]
    return tuple(requirements)


def log_keras_model(run: TrackedRun, model: Any, example: Any, output: Any, step: int) -> str:
    """Log ``model`` with a signature and an input example; returns its ``models:/`` URI.

    ``output`` is ``model.predict(example)``, computed by the caller on the training thread so
    that this function may run in another thread. The logged model is created first with the
    run's experiment: left to itself, MLflow would file it under the experiment of the (absent)
    active run, i.e. the Default one.
    """
    from mlflow.models import Model, infer_signature

    signature = infer_signature(example, output)
    logged = run.client.create_logged_model(
        experiment_id=run.experiment_id, name="model", source_run_id=run.run_id
    )
    with global_tracking_uri(run.spec.uri):
        Model.log(
            artifact_path=None,
            name="model",
            flavor=_KerasFlavor,
            flavor_name="keras",
            model=model,
            run_id=run.run_id,
            model_id=logged.model_id,
            signature=signature,
            input_example=example,
            # Given, not inferred: inference re-loads the model in a subprocess (~8 s).
            pip_requirements=list(pip_requirements()),
            # Validation loads the model once more to predict the example: we know it does.
            validate_serving_input=False,
            step=step,
        )
    return f"models:/{logged.model_id}"
