"""The typed schema of a job's config, checked where the config is read, once.

Hydra structured configs, the way Hydra's "Structured config schema" tutorial does it: each
dataclass is stored in Hydra's ``ConfigStore`` and named first in a defaults list, so the YAML
files are merged *into* the schema. Types are checked while Hydra composes the config
(``trainer.epochs=abc`` fails there, naming the key); :func:`validate` then checks the ranges
and the names (``trainer.epochs=0``, ``trainer.precision=fp8``, a NaN learning rate, a malformed
``tracking.uri`` ...) before TensorFlow is imported, so a bad input ends in about two seconds.

```
conf/config.yaml           defaults: [base_config, _self_, {trainer: default}, ...]
conf/trainer/default.yaml  defaults: [trainer_schema, _self_]
conf/data/*.yaml           defaults: [data_schema, _self_]
conf/tracking/*.yaml       defaults: [tracking_schema, _self_]
```

:func:`register` must run before Hydra composes (``run.py`` and the test fixtures call it; it is
idempotent). A key added to ``conf/trainer``, ``conf/data`` or ``conf/tracking`` must be added
to its dataclass here too: Hydra refuses keys that the schema does not have.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from omegaconf import MISSING, DictConfig, OmegaConf

from trainkit.errors import ConfigError

PRECISIONS = ("auto", "float32", "mixed_bfloat16", "mixed_float16")
STRATEGIES = ("auto", "mirrored", "multi_worker")
TASKS = ("train", "predict")
DATASETS = ("digits", "folder", "mnist", "fashion_mnist", "cifar10")
# MLflow's own stores; anything else is a typo, not a store (MLflow would fall back to nothing).
TRACKING_SCHEMES = (
    "sqlite",
    "file",
    "http",
    "https",
    "postgresql",
    "mysql",
    "mssql",
    "databricks",
    "databricks-uc",
)


# -- the groups ---------------------------------------------------------------------------------


@dataclass
class TrainerConfig:
    """``conf/trainer``: how long and how ``fit`` runs."""

    epochs: int = 5
    batch_size: int = 32
    steps_per_execution: int = 1
    seed: int | None = 42
    precision: str = "auto"
    steps_per_epoch: int | None = None
    validation_steps: int | None = None
    # auto | true | false (Keras's compile(jit_compile=...))
    jit_compile: bool | str = "auto"
    run_eagerly: bool = False
    # tf.distribute: auto | mirrored | multi_worker, on these devices (null: all)
    strategy: str = "auto"
    devices: list[str] | None = None
    # seconds a multi-worker job waits for its cluster
    cluster_timeout: float = 300.0
    # TensorFlow op determinism (same seed, same weights)
    deterministic: bool = False
    # a backup folder or run directory to continue from
    resume: str | None = None


@dataclass
class AugmentConfig:
    enabled: bool = True
    translate: float = 0.1
    flip: bool = False


@dataclass
class DataConfig:
    """``conf/data``: which images, at what size, how many."""

    name: str = MISSING
    path: str | None = None
    image_size: int | None = None
    limit: int | None = None
    val_split: float = 0.15
    test_split: float = 0.15
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass
class TrackingConfig:
    """``conf/tracking``: where MLflow writes."""

    uri: str = "sqlite:///mlflow.db"
    experiment: str = "trainkit"
    run_name: str | None = None
    system_metrics: bool = False
    log_model: bool = True
    artifact_location: str | None = None
    tags: dict[str, Any] = field(default_factory=dict)


@dataclass
class PathsConfig:
    # null: Hydra's run directory (hydra.run.dir / hydra.sweep.dir + subdir)
    output_dir: str | None = None


@dataclass
class Config:
    """The whole job config. ``model``, ``optimizer`` and ``callbacks`` stay open dicts:
    ``_target_`` entries whose options belong to their classes (checked when built)."""

    task: str = "train"
    optimized_metric: str = "val_accuracy"
    checkpoint: str | None = None
    inputs: str | None = None
    top_k: int = 5
    paths: PathsConfig = field(default_factory=PathsConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    data: DataConfig = field(default_factory=DataConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    model: Any = None
    optimizer: Any = None
    callbacks: Any = None


SCHEMAS: dict[str | None, tuple[str, type]] = {
    None: ("base_config", Config),
    "trainer": ("trainer_schema", TrainerConfig),
    "data": ("data_schema", DataConfig),
    "tracking": ("tracking_schema", TrackingConfig),
}


def register() -> None:
    """Store the schemas in Hydra's ConfigStore (idempotent: storing again replaces them)."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    for group, (name, node) in SCHEMAS.items():
        store.store(name=name, node=node, group=group)


# -- ranges and names: checked after composition, before TensorFlow -----------------------------


def validate(cfg: DictConfig) -> None:
    """Raise one :class:`ConfigError` naming every key whose value cannot work, and its fix."""
    problems = [p for check in CHECKS for p in check(cfg)]
    if problems:
        raise ConfigError("; ".join(problems))


def _get(cfg: DictConfig, key: str) -> Any:
    return OmegaConf.select(cfg, key, default=None, throw_on_missing=False)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _at_least(cfg: DictConfig, key: str, low: int, optional: bool = False) -> list[str]:
    value = _get(cfg, key)
    if value is None and optional:
        return []
    if not _is_int(value) or value < low:
        hint = " or null" if optional else ""
        return [f"{key}={value!r} must be a whole number >= {low}{hint}: set e.g. {key}={low}"]
    return []


def _one_of(cfg: DictConfig, key: str, choices: tuple[Any, ...]) -> list[str]:
    value = _get(cfg, key)
    if value not in choices:
        shown = ", ".join(str(c).lower() if isinstance(c, bool) else str(c) for c in choices)
        return [f"unknown {key} '{value}': choose one of {shown}"]
    return []


def _trainer(cfg: DictConfig) -> list[str]:
    out = _at_least(cfg, "trainer.epochs", 1)
    out += _at_least(cfg, "trainer.batch_size", 1)
    out += _at_least(cfg, "trainer.steps_per_execution", 1)
    out += _at_least(cfg, "trainer.steps_per_epoch", 1, optional=True)
    out += _at_least(cfg, "trainer.validation_steps", 1, optional=True)
    seed = _get(cfg, "trainer.seed")
    if seed is not None and (not _is_int(seed) or not 0 <= seed < 2**32):
        out.append(f"trainer.seed={seed!r} must be a whole number in [0, 2**32) or null")
    out += _one_of(cfg, "trainer.precision", PRECISIONS)
    out += _one_of(cfg, "trainer.jit_compile", ("auto", True, False))
    out += _one_of(cfg, "trainer.strategy", STRATEGIES)
    strategy, per_call = _get(cfg, "trainer.strategy"), _get(cfg, "trainer.steps_per_execution")
    if strategy in ("mirrored", "multi_worker") and _is_int(per_call) and per_call > 1:
        # Keras 3's TensorFlow trainer fails there ("You must feed a value for placeholder
        # tensor ..."), keras-team/keras#19246: refused here instead of after the first trace.
        out.append(
            f"trainer.steps_per_execution={per_call} does not run under "
            f"trainer.strategy={strategy} (Keras 3 fails there, keras-team/keras#19246): "
            "set trainer.steps_per_execution=1"
        )
    timeout = _get(cfg, "trainer.cluster_timeout")
    if not isinstance(timeout, int | float) or not math.isfinite(timeout) or timeout <= 0:
        out.append(
            f"trainer.cluster_timeout={timeout!r} must be a number of seconds > 0: "
            "set e.g. trainer.cluster_timeout=300"
        )
    return out


def _data(cfg: DictConfig) -> list[str]:
    out = _one_of(cfg, "data.name", DATASETS)
    out += _at_least(cfg, "data.limit", 1, optional=True)
    out += _at_least(cfg, "data.image_size", 1, optional=True)
    val, test = _get(cfg, "data.val_split"), _get(cfg, "data.test_split")
    for key, value in (("data.val_split", val), ("data.test_split", test)):
        if not isinstance(value, float | int) or not 0 < value < 1:
            out.append(f"{key}={value!r} must be a fraction between 0 and 1: set e.g. {key}=0.15")
    if not out and val + test >= 1:
        out.append(
            f"data.val_split + data.test_split = {val + test:g} leaves nothing to train on: "
            "keep their sum below 1"
        )
    translate = _get(cfg, "data.augment.translate")
    if not isinstance(translate, float | int) or not 0 <= translate < 1:
        out.append(
            f"data.augment.translate={translate!r} must be a fraction in [0, 1) of the image side"
        )
    folder = _get(cfg, "data.name") == "folder" and not OmegaConf.is_missing(cfg.data, "path")
    if folder and _get(cfg, "task") == "train" and not out:
        from trainkit.data.folder import list_images

        list_images(_get(cfg, "data.path"))  # raises, naming data.path, before TensorFlow
    return out


def _optimizer(cfg: DictConfig) -> list[str]:
    optimizer = _get(cfg, "optimizer")
    if not isinstance(optimizer, DictConfig) or "_target_" not in optimizer:
        return [
            "optimizer must be a dict with a _target_ (e.g. optimizer=adam, or "
            "optimizer._target_=keras.optimizers.SGD)"
        ]
    rate = _get(cfg, "optimizer.learning_rate")
    if rate is None or isinstance(rate, DictConfig):  # the class default, or a schedule object
        return []
    if (
        not isinstance(rate, int | float)
        or isinstance(rate, bool)
        or not math.isfinite(rate)
        or rate <= 0
    ):
        return [
            f"optimizer.learning_rate={rate!r} must be a finite number > 0: "
            "set e.g. optimizer.learning_rate=1e-4"
        ]
    return []


def _tracking(cfg: DictConfig) -> list[str]:
    out = []
    uri = _get(cfg, "tracking.uri")
    if uri:
        scheme = urlparse(str(uri)).scheme
        # A bare path is MLflow's file store; "C:" style drive letters are paths too.
        # postgresql+psycopg://, mysql+pymysql://: the driver after "+" is SQLAlchemy's.
        if scheme and len(scheme) > 1 and scheme.split("+")[0] not in TRACKING_SCHEMES:
            out.append(
                f"tracking.uri='{uri}' is not an MLflow store: use sqlite:///mlflow.db, "
                "http://HOST:PORT, file:///DIR or a database URI "
                f"({', '.join(TRACKING_SCHEMES)})"
            )
        elif scheme in ("http", "https") and not urlparse(str(uri)).hostname:
            out.append(f"tracking.uri='{uri}' has no host: use http://HOST:PORT")
    for key in ("tracking.experiment", "tracking.run_name"):
        value = _get(cfg, key)
        if value is None and key == "tracking.run_name":
            continue
        text = str(value)
        if not text.strip() or ".." in re.split(r"[/\\]", text) or "\x00" in text:
            out.append(
                f"{key}='{value}' is not a valid name (empty, or a '..' path part that could "
                f"write outside the store): use a plain name, e.g. {key}=mine"
            )
    return out


def _model(cfg: DictConfig) -> list[str]:
    weights = _get(cfg, "model.weights")
    if weights is None or str(weights) == "imagenet":
        return []
    from trainkit.config.files import check_weights_file

    check_weights_file(str(weights), key="model.weights")
    return []


def _task(cfg: DictConfig) -> list[str]:
    task = _get(cfg, "task")
    if task not in TASKS:
        return [f"unknown task '{task}': choose task=train or task=predict"]
    out = _at_least(cfg, "top_k", 1)
    if task == "predict":
        from trainkit.predict_task import check_inputs

        check_inputs(_get(cfg, "checkpoint"), _get(cfg, "inputs"))
    return out


def _missing(cfg: DictConfig) -> list[str]:
    out = []
    for key in sorted(OmegaConf.missing_keys(cfg)):
        if key == "data.path":
            out.append("data=folder needs a folder: add data.path=DIR (one subfolder per class)")
        else:
            out.append(f"{key} is required: add {key}=VALUE")
    return out


def _paths(cfg: DictConfig) -> list[str]:
    output = _get(cfg, "paths.output_dir")
    if output and Path(str(output)).expanduser().exists() and not Path(output).is_dir():
        return [f"paths.output_dir={output} is a file, not a folder"]
    return []


def _unknown(cfg: DictConfig) -> list[str]:
    """Keys added with ``+`` that the schema does not have (Hydra lets ``+`` add them)."""
    out = []
    for group, (_, schema) in SCHEMAS.items():
        node = cfg if group is None else _get(cfg, group)
        if not isinstance(node, DictConfig):
            continue
        known = {f.name for f in fields(schema)} | ({"hydra"} if group is None else set())
        for key in node:
            if key not in known:
                full = str(key) if group is None else f"{group}.{key}"
                out.append(
                    f"{full}: no such key (not in {schema.__name__}): check its spelling; "
                    "python run.py --cfg job lists every key"
                )
    return out


def _callbacks(cfg: DictConfig) -> list[str]:
    """Callback entries are dicts with a ``_target_`` whose top-level package exists (found
    without importing it, so before TensorFlow). Options are checked when the job imports the
    class (:func:`trainkit.stack.check_callback_entry`)."""
    import importlib.util

    out = []
    entries = _get(cfg, "callbacks")
    if entries is None:
        return out
    if not isinstance(entries, DictConfig):
        return [f"callbacks must be a dict of _target_ entries or a stack name, got {entries!r}"]
    for name, entry in entries.items():
        if entry is None:
            continue
        if not isinstance(entry, DictConfig) or "_target_" not in entry:
            out.append(
                f"callbacks.{name} must be a dict with a _target_ "
                f"(e.g. +callbacks.{name}._target_=mypkg.MyCallback), got {entry!r}"
            )
            continue
        target = str(entry._target_)
        package = target.split(".")[0]
        try:
            found = bool(package) and importlib.util.find_spec(package) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            out.append(
                f"callbacks.{name}._target_={target} cannot be imported: No module named "
                f"'{package}': fix the dotted path (package.module.Class) or put its package "
                "on PYTHONPATH"
            )
    return out


# Order: what the others rely on first (unknown keys, missing values, then the task, ...).
CHECKS = (
    _unknown,
    _missing,
    _task,
    _trainer,
    _optimizer,
    _tracking,
    _paths,
    _callbacks,
    _data,
    _model,
)
