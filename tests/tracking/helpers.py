"""Helpers of the tracking tests: a real ``mlflow server`` handle and the tiny job."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
import requests
import tensorflow as tf

from trainkit.context import JobStatus, RunContext
from trainkit.stack import build_stack

MLFLOW = str(Path(sys.executable).with_name("mlflow"))
CLASSES = ["cat", "dog", "bird"]
STEPS = 5  # per epoch
BATCH = 8
SECRET = "s3cr3t-never-logged"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a test's ``mlflow server``: no inherited MLflow settings, and no job
    execution. MLflow 3's server otherwise starts a job runner and seven huey consumer
    processes (for GenAI jobs trainkit never submits): each imports MLflow, twice the CPU of
    the server itself, and they outlive a server stopped by SIGTERM."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    env.update(extra or {})
    return env


def stop_group(process: subprocess.Popen) -> None:
    """SIGTERM to the process group of ``process`` (started with ``start_new_session``), then
    SIGKILL after 20 s: nothing it started is left running."""
    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


@dataclass
class Server:
    """A real ``mlflow server`` that a test may stop and start again (same port, same store)."""

    root: Path
    port: int
    log: Path
    process: subprocess.Popen | None = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def launch(self, extra_args: tuple[str, ...] = (), extra_env: dict[str, str] | None = None):
        command = [
            MLFLOW,
            "server",
            *extra_args,
            "--backend-store-uri",
            f"sqlite:///{self.root / 'server.db'}",
            "--serve-artifacts",
            "--artifacts-destination",
            str(self.root / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            "1",
        ]
        env = server_env(extra_env)
        with self.log.open("ab") as out:
            # Its own process group: the CLI starts uvicorn as a child, stop() ends both.
            self.process = subprocess.Popen(
                command, stdout=out, stderr=out, env=env, start_new_session=True
            )

    def healthy(self) -> bool:
        try:
            return requests.get(f"{self.uri}/health", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def wait(self, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.healthy():
                return
            if self.process is not None and self.process.poll() is not None:
                break
            time.sleep(0.3)
        tail = self.log.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"mlflow server did not come up on {self.uri}:\n{tail}")

    def stop(self) -> None:
        if self.process is not None:
            stop_group(self.process)
        self.process = None

    def start(self) -> None:
        self.launch()
        self.wait()

    def ready(self) -> Server:
        """Launched (if not yet) and answering: what a test that needs the server gets."""
        if self.process is None:
            self.launch()
        self.wait()
        return self

    def boot_if_module_needs(self, request: pytest.FixtureRequest, needs) -> None:
        """Launch at the first test of a module with a test for which ``needs(item)``, so the
        server boots while the module's other tests run. Per module, not per session: under
        pytest-xdist every worker collects every test, and a worker that never runs such a
        test must not boot a server."""
        if self.process is None and any(
            needs(item)
            for item in request.session.items
            if getattr(item, "module", None) is request.module
        ):
            self.launch()


def datasets(arrays: tuple[np.ndarray, np.ndarray]) -> tuple[tf.data.Dataset, tf.data.Dataset]:
    x, y = arrays
    train = tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH)
    val = tf.data.Dataset.from_tensor_slices((x[:16], y[:16])).batch(BATCH)
    return train, val


def tiny_model(steps_per_execution: int = 1) -> keras.Model:
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            keras.layers.Rescaling(1 / 255),
            keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(len(CLASSES), activation="softmax"),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        steps_per_execution=steps_per_execution,
    )
    return model


def make_context(
    run_dir: Path, uri: str, arrays: tuple[np.ndarray, np.ndarray], **tracking: Any
) -> RunContext:
    _, val = datasets(arrays)
    return RunContext(
        run_dir=run_dir,
        config={
            "model": {"name": "tiny", "filters": 4},
            "trainer": {"epochs": 2, "lr": 0.01},
            "data": {"name": "random", "augment": ["flip", "crop"]},
            "db": {"url": "postgresql://trainer:hunter2@db.local/runs"},
        },
        model_name="tiny",
        stack="test",
        class_names=list(CLASSES),
        image_size=(8, 8),
        batch_size=BATCH,
        tracking={"uri": uri, "experiment": "trainkit-tests", "log_model": False, **tracking},
        test_data=val,
        sample_images=arrays[0][:6],
    )


@dataclass
class Job:
    """What a tiny job did: its context, model, Keras history and how it ended."""

    context: RunContext
    model: keras.Model
    callbacks: list[keras.callbacks.Callback]
    history: dict[str, list[float]] = field(default_factory=dict)
    test: dict[str, float] = field(default_factory=dict)
    status: str = "FAILED"


def run_job(
    context: RunContext,
    callbacks: list[keras.callbacks.Callback],
    arrays: tuple[np.ndarray, np.ndarray],
    *,
    epochs: int = 2,
    initial_epoch: int = 0,
    steps_per_execution: int = 1,
    extra: list[keras.callbacks.Callback] | None = None,
    evaluate: bool = True,
    before_job_end: Any = None,
    model: keras.Model | None = None,
) -> Job:
    """The job's sequence: set_context, fit, evaluate, predict, on_job_end(status) in finally.
    ``model`` (compiled) replaces the tiny default model."""
    train, val = datasets(arrays)
    model = model if model is not None else tiny_model(steps_per_execution)
    job = Job(context, model, callbacks)
    stack = build_stack([*callbacks, *(extra or [])], context, model)
    steps = int(train.cardinality())
    try:
        fit = model.fit(
            train,
            validation_data=val,
            epochs=epochs,
            initial_epoch=initial_epoch,
            callbacks=stack.for_fit(epochs, steps),
            shuffle=False,
        )
        job.history = fit.history
        if evaluate:
            job.test = model.evaluate(
                val, callbacks=stack.for_evaluate(int(val.cardinality())), return_dict=True
            )
            model.predict(arrays[0][:10], batch_size=4, callbacks=stack.for_predict(3))
        job.status = "FINISHED"
    except KeyboardInterrupt:
        job.status = "KILLED"
    except RuntimeError:
        job.status = "FAILED"
    finally:
        if before_job_end is not None:
            before_job_end()
        for problem in stack.end_job(JobStatus.of(job.status)):
            raise AssertionError(f"a callback failed to close: {problem}")
    return job


class StopsTraining(keras.callbacks.Callback):
    """What the job finds in ctx.callbacks: an early stopper and a checkpointer."""

    def __init__(self, checkpoint: Path) -> None:
        super().__init__()
        self.stop_reason = "val_loss did not improve for 3 epochs"
        self.best_model_path = str(checkpoint)
