"""The job: what ``python run.py ...`` does, top to bottom.

    config -> seed, precision -> data -> model -> compile -> callbacks
           -> fit(train, validation) -> evaluate(test) -> predict(sample)
           -> every callback's on_job_end(status) -> the monitored metric

fit, evaluate and predict run through the same callback objects, so test and predict hooks
fire too. Whatever happens, each callback's ``on_job_end`` runs once with ``FINISHED``,
``FAILED`` or ``KILLED`` (Ctrl-C), which is when the MLflow run ends with that status.
"""

from __future__ import annotations

import json
import logging
import math
import re
import sys
from pathlib import Path
from typing import Any, NoReturn

from omegaconf import DictConfig, OmegaConf

from trainkit.errors import (
    ConfigError,
    DataError,
    TrainkitError,
    describe,
    one_line,
    root_cause,
)
from trainkit.hydra_run import hydra_choice, output_dir

log = logging.getLogger("trainkit")


def main(cfg: DictConfig) -> float | None:
    """Hydra's task function. A :class:`TrainkitError` prints one line and exits with 2.

    The config is checked first, against :mod:`trainkit.config.schema`, before TensorFlow is
    imported. Whatever the error, ``run.log`` (Hydra's job log) gets its full trace at DEBUG.
    """
    from trainkit.errors import mark_job_started

    mark_job_started()
    try:
        task = cfg.get("task", "train")
        if task == "train":
            return train(cfg)  # which validates first
        validate(cfg)
        if task == "predict":
            from trainkit.predict_task import predict

            predict(cfg)
            return None
        raise ConfigError(f"unknown task '{task}': choose task=train or task=predict")
    except TrainkitError as err:
        fail(err)
    except KeyboardInterrupt as stop:
        # The callbacks already closed with KILLED (train's finally): say so, no traceback.
        log.debug("interrupted", exc_info=True)
        name = getattr(stop, "name", "SIGINT")
        print(
            f"interrupted: the MLflow run ended KILLED ({name}); the backup, checkpoints and "
            "logs are in the run directory; rerun the same command to resume",
            file=sys.stderr,
            flush=True,
        )
        raise SystemExit(getattr(stop, "exit_code", 130)) from None
    except Exception as exc:
        user_error = as_user_error(exc, cfg)
        if user_error is None:
            log.debug("job failed", exc_info=True)
            raise  # a bug: its traceback is what helps
        log.debug("job failed", exc_info=True)
        fail(user_error)


def validate(cfg: DictConfig) -> None:
    """Types, ranges and names of the config (:func:`trainkit.config.schema.validate`)."""
    from trainkit.config.schema import validate as check

    check(cfg)


def check_callbacks(cfg: DictConfig) -> None:
    """Import every callback ``_target_`` and check its options against its signature."""
    from trainkit.stack import check_callback_entry

    for name, entry in (cfg.get("callbacks") or {}).items():
        if isinstance(entry, DictConfig) and "_target_" in entry:
            check_callback_entry(str(name), str(entry._target_), entry)


def fail(err: TrainkitError) -> NoReturn:
    """One ``error:`` line on stderr, the trace in run.log at DEBUG, exit status 2."""
    message = describe(err)
    log.debug("error: %s", message, exc_info=err)
    for handler in logging.getLogger().handlers + log.handlers:
        handler.flush()  # SystemExit skips Hydra's own flush
    print(f"error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(err.exit_code) from None


def as_user_error(exc: BaseException, cfg: DictConfig) -> TrainkitError | None:
    """A user error hidden in a library's exception (an image TensorFlow cannot decode, a
    ``_target_`` Hydra cannot build), or None for a bug."""
    text = str(exc)
    name = type(exc).__name__
    if name == "InvalidArgumentError" and any(
        word in text for word in ("decode", "Decode", "image format", "Invalid JPEG", "Invalid PNG")
    ):
        where = OmegaConf.select(cfg, "data.path", default=None, throw_on_missing=False)
        # TensorFlow's message, without its graph node names.
        reason = re.sub(r"\{\{.*?\}\}|\[\[.*?\]\]|\[Op:.*?\]", "", text).strip()
        reason = one_line(reason.splitlines()[0] if reason else name, limit=200)
        bad = first_unreadable_image(where) if where else None
        culprit = f" {bad}" if bad else " an image"
        return DataError(
            f"data.path={where}:{culprit} cannot be decoded ({reason}): remove or replace it"
        )
    if name == "InstantiationException":
        return ConfigError(f"cannot build a _target_ of the config: {one_line(text)}")
    return None


def first_unreadable_image(folder: str) -> str | None:
    """The first image under ``folder`` that PIL cannot decode fully (only on the error path:
    it decodes every image)."""
    try:
        from PIL import Image

        from trainkit.data.folder import IMAGE_SUFFIXES
    except ImportError:
        return None
    for path in sorted(Path(str(folder)).expanduser().rglob("*")):
        if path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
            continue
        try:
            with Image.open(path) as image:
                image.load()
        except Exception:  # noqa: BLE001 - any failure is the answer
            return str(path)
    return None


def tracking_settings(cfg: DictConfig) -> dict[str, Any]:
    """The ``tracking`` group with a relative SQLite URI made absolute (against the cwd)."""
    tracking = OmegaConf.to_container(cfg.tracking, resolve=True) if "tracking" in cfg else {}
    uri = str(tracking.get("uri") or "sqlite:///mlflow.db")
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri[len(prefix) :].startswith("/"):
        uri = prefix + str((Path.cwd() / uri[len(prefix) :]).resolve())
    tracking["uri"] = uri
    return tracking


def compile_model(model, cfg: DictConfig, num_classes: int) -> None:
    import keras
    from hydra.utils import instantiate

    try:
        optimizer = instantiate(cfg.optimizer, _convert_="all")
    except Exception as exc:  # noqa: BLE001 - an unknown class, a misspelt or wrong option
        raise ConfigError(
            f"optimizer ({cfg.optimizer.get('_target_')}) cannot be built: {root_cause(exc)}: "
            "fix optimizer._target_ (a keras.optimizers class) or its options"
        ) from exc
    metrics: list[Any] = ["accuracy"]
    if num_classes > 5:
        metrics.append(keras.metrics.SparseTopKCategoricalAccuracy(k=5, name="top5_accuracy"))
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(),
        metrics=metrics,
        steps_per_execution=int(cfg.trainer.steps_per_execution),
        jit_compile=cfg.trainer.get("jit_compile", "auto"),
        run_eagerly=bool(cfg.trainer.get("run_eagerly", False)),
    )


def monitored_value(
    history: dict[str, list[float]], test: dict[str, float], metric: str, model: Any = None
) -> float | None:
    """The value a sweeper optimizes: a ``test_*`` metric, or the best epoch of a history key,
    best in the metric's own direction (:func:`callbacks.base.metric_direction`)."""
    from callbacks.base import metric_direction

    if metric.startswith("test_") and metric[5:] in test:
        return float(test[metric[5:]])
    values = [v for v in history.get(metric, []) if v is not None and math.isfinite(v)]
    if not values:
        return None
    best = min if metric_direction(metric, model) == "min" else max
    return float(best(values))


def train(cfg: DictConfig) -> float | None:
    validate(cfg)  # before TensorFlow: a bad input ends in seconds
    from trainkit import runtime

    runtime.quiet_tensorflow()
    check_callbacks(cfg)  # before data and model: a misspelt callback fails in seconds
    import keras

    from trainkit.context import JobStatus, RunContext, SplitSteps
    from trainkit.data import load as load_data
    from trainkit.distribute import make_strategy, shard
    from trainkit.models import backbone_layers, build_model, resolve_input_shape
    from trainkit.stack import build_stack
    from trainkit.tracking.flatten import redact_saved_config

    run_dir = output_dir(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    redact_saved_config(run_dir)  # Hydra's .hydra/*.yaml: no password left in the run directory
    trainer = cfg.trainer
    runtime.configure(OmegaConf.to_container(trainer, resolve=True))
    if trainer.get("deterministic"):
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    placement = make_strategy(
        trainer.get("strategy") or "auto",
        trainer.get("devices"),
        float(trainer.get("cluster_timeout") or 300),
    )
    log.info(placement.describe())
    seed = int(trainer.seed) if trainer.get("seed") is not None else 0

    model_name = cfg.model.name
    input_shape = resolve_input_shape(model_name, cfg.data.get("image_size"))
    data = load_data(
        OmegaConf.to_container(cfg.data, resolve=True),
        image_size=input_shape[:2],
        batch_size=int(trainer.batch_size),
        seed=seed,
    )
    # batch_size is the global batch; several workers each read their own share of it.
    train_data, val_data, test_data = (
        map(shard, (data.train, data.val, data.test))
        if placement.num_workers > 1
        else (data.train, data.val, data.test)
    )
    options = OmegaConf.to_container(cfg.model.get("options") or {}, resolve=True)
    with placement.strategy.scope():  # variables, the optimizer's included, on every replica
        model = build_model(
            model_name,
            data.num_classes,
            input_shape=input_shape,
            weights=cfg.model.get("weights"),
            **options,
        )
        if cfg.model.get("freeze_backbone"):
            for layer in backbone_layers(model):
                layer.trainable = False
        compile_model(model, cfg, data.num_classes)
    (run_dir / "class_names.json").write_text(json.dumps(data.class_names))

    sample_images, _ = data.sample_batch("train")
    predict_images, _ = data.sample_batch("test")
    # Steps beyond one pass would need a repeated dataset: cap them at one pass.
    steps_per_epoch = min(trainer.get("steps_per_epoch") or math.inf, data.steps("train"))
    validation_steps = min(trainer.get("validation_steps") or math.inf, data.steps("val"))
    context = RunContext(
        run_dir=run_dir,
        config=OmegaConf.to_container(cfg, resolve=True),
        model_name=model_name,
        stack=hydra_choice("callbacks"),
        class_names=data.class_names,
        image_size=data.image_size,
        batch_size=data.batch_size,
        tracking=tracking_settings(cfg),
        train_data=data.train,
        test_data=data.test,
        test_labels=data.extras.get("test_labels"),
        sample_images=sample_images,
        data_sizes=dict(data.sizes),
        steps=SplitSteps(
            train=int(steps_per_epoch),
            val=int(validation_steps),
            test=data.steps("test"),
            predict=math.ceil(len(predict_images) / data.batch_size),
        ),
        precision=keras.mixed_precision.global_policy().name,
        is_chief=placement.is_chief,
        strategy=placement.name,
        worker_index=placement.worker_index,
    )
    from callbacks.backup import Backup, resume_within_epoch
    from trainkit import signals
    from trainkit.stack import instantiate_callbacks

    # GracefulStop last: it ends fit after a signal once every callback saw the step.
    stack = build_stack(
        [*instantiate_callbacks(cfg.get("callbacks")), signals.GracefulStop()], context, model
    )
    # Exact resume: the data starts at the batch after the backup's (no batch drawn twice).
    epochs = int(trainer.epochs)
    backup = context.find(Backup)
    if backup is not None:
        backup.continue_tracked_run()  # trainer.resume=PATH: the backup's MLflow run goes on
    first_epoch, steps_done = (backup.resume_point() if backup else None) or (0, 0)
    first_epoch = min(first_epoch, epochs)
    train_data = data.extras["train_data"].stream(
        first_epoch, epochs, steps_done, int(steps_per_epoch)
    )
    if steps_done:
        train_data = train_data.repeat()  # its length is not Keras's epochs x steps any more
        resume_within_epoch(stack, model, first_epoch, steps_done, train_data.element_spec)
    if placement.num_workers > 1:
        train_data = shard(train_data)

    log.info(
        "model %s (%s params) on %s: %s train / %s val / %s test images at %sx%s, %s classes",
        model_name,
        f"{model.count_params():,}",
        data.name,
        data.sizes["train"],
        data.sizes["val"],
        data.sizes["test"],
        *data.image_size,
        data.num_classes,
    )
    store_before = disk_snapshot(context)  # the SQLite file before this job's run writes
    status = JobStatus.FAILED
    history: dict[str, list[float]] = {}
    test: dict[str, float] = {}
    try:
        with signals.installed(model):
            fit = model.fit(
                train_data,
                validation_data=val_data,
                epochs=epochs,
                initial_epoch=first_epoch,
                steps_per_epoch=int(steps_per_epoch),
                validation_steps=int(validation_steps),
                shuffle=False,  # the pipeline shuffles
                callbacks=stack.for_fit(epochs, context.steps.train, verbose=2),
            )
            history = fit.history
            non_finite = non_finite_stop(context)
            if non_finite:
                raise NonFiniteLossError(non_finite)
            test = model.evaluate(
                test_data, callbacks=stack.for_evaluate(context.steps.test), return_dict=True
            )
            model.predict(
                predict_images,
                batch_size=data.batch_size,
                callbacks=stack.for_predict(context.steps.predict),
            )
        status = JobStatus.FINISHED
    except KeyboardInterrupt:
        status = JobStatus.KILLED
        raise
    except Exception as exc:
        user_error = as_user_error(exc, cfg)
        context.error = describe(user_error or exc)  # the MLflow run's trainkit.error tag
        if user_error is not None:
            raise user_error from exc
        raise
    finally:
        for problem in stack.end_job(status):
            log.warning("callback failed to close: %s", problem)
        keras.backend.clear_session(free_memory=False)

    metric = str(cfg.get("optimized_metric") or "val_accuracy")
    value = monitored_value(history, test, metric, model)
    report(run_dir, context.tracking, test, metric, value)
    if context.is_chief:
        report_disk(context, model, store_before)
    return value


def disk_snapshot(context) -> int:
    """Bytes of the job's SQLite store before the job writes to it (0 for other stores)."""
    from trainkit import disk

    return disk.file_size(disk.sqlite_file(context.tracking.get("uri")))


def report_disk(context, model, store_before: int) -> None:
    """The bytes the job wrote (run directory + store growth) against one full checkpoint:
    one line, and the MLflow run's metric ``system/disk_bytes_written`` and tag
    ``trainkit.disk``."""
    from trainkit import disk
    from trainkit.context import TracksRun

    logger = context.find(TracksRun)
    tracked = getattr(logger, "run", None)
    run_bytes, store_bytes = disk.measure(
        context.run_dir,
        tracked,
        getattr(logger, "model_uri", None),
        store_before,
        disk.sqlite_file(context.tracking.get("uri")),
    )
    usage = disk.DiskUsage(run_bytes, store_bytes, disk.state_bytes(model))
    disk.report(usage, tracked)


class NonFiniteLossError(TrainkitError):
    """Training stopped on a NaN or infinite loss; the run ends FAILED."""


def non_finite_stop(context) -> str | None:
    """The message for a fit that a callback stopped on a non-finite value, or None."""
    from trainkit.context import StopsTraining

    for callback in context.find_all(StopsTraining):
        if callback.stop_reason == "non_finite":
            name = getattr(callback, "trainkit_name", type(callback).__name__)
            return (
                f"training stopped: the loss is not finite ({name}); the last good weights are "
                "kept. Lower optimizer.learning_rate or check the data"
            )
    return None


def run_page(run_dir: Path, uri: str, ui: str) -> str | None:
    """The URL of the job's run in the MLflow UI at ``ui``, opened on the Model training view.

    MLflow 3.17's UI ignores the experiment's kind tag and opens every experiment on its GenAI
    view unless the URL (or a choice remembered by the browser) says ``workflowType``.
    """
    from trainkit.tracking.files import RUN_ID_FILE

    try:
        run_id = (run_dir / RUN_ID_FILE).read_text().strip()
        if not run_id or not uri.startswith(("sqlite:", "http:", "https:")):
            return None
        from trainkit.tracking.store import probe  # MLflow's import: only when there is a run

        if uri.startswith("http") and not probe(uri):  # MLflow would retry for minutes
            return None
        from mlflow import MlflowClient

        experiment = MlflowClient(uri).get_run(run_id).info.experiment_id
    except Exception:  # noqa: BLE001 - no run (tracking off, store gone): no link to print
        return None
    return f"{ui}/#/experiments/{experiment}/runs/{run_id}?workflowType=machine_learning"


def report(run_dir: Path, tracking: dict, test: dict, metric: str, value) -> None:
    """The job's last lines: the results and the commands that open what it wrote."""
    shown = ", ".join(f"{k}={v:.4f}" for k, v in test.items())
    print(f"test: {shown}", flush=True)
    if value is not None:
        print(f"{metric}: {value:.4f}", flush=True)
    print(f"run directory: {run_dir}", flush=True)
    uri = tracking.get("uri", "")
    local = uri.startswith(("sqlite:", "file:", "postgresql:", "mysql:"))
    if local:
        print(f"browse runs:   mlflow ui --backend-store-uri {uri}", flush=True)
    elif uri:
        print(f"browse runs:   open {uri}", flush=True)
    page = run_page(run_dir, uri, "http://127.0.0.1:5000" if local else uri.rstrip("/"))
    if page:
        print(f"the run:       {page}", flush=True)
    tensorboard = run_dir / "tensorboard"
    if tensorboard.exists():
        print(f"browse curves: tensorboard --logdir {tensorboard}", flush=True)
