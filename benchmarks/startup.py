"""How long ``python run.py model=alexnet callbacks=full`` takes to reach its first step.

    python benchmarks/startup.py [overrides ...]

Two measurements:

1. **End to end**: ``run.py`` with the given overrides (default ``model=alexnet
   callbacks=full``) runs as a user starts it, plus one probe callback that writes the time of
   the first training step's end and stops the process there. The figure is that time minus
   the moment the process was started.
2. **The split**, in this process, calling what the job calls in the job's order: imports
   (TensorFlow, Keras, MLflow, Hydra, trainkit), config (Hydra compose), data
   (``trainkit.data.load``), model build, compile, then the first ``fit`` step (graph tracing
   and the step itself), with the callbacks of the chosen stack.

Target (issue 13): under 15 s end to end on this machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ["model=alexnet", "callbacks=full"]

PROBE = '''
import json, os, time
import keras

class FirstStep(keras.callbacks.Callback):
    """Writes the wall-clock time of the first train step's end, then ends the process."""

    def on_train_batch_end(self, batch, logs=None):
        with open(os.environ["STARTUP_PROBE_OUT"], "w") as out:
            json.dump({"first_step_end": time.time()}, out)
        os._exit(0)
'''


def end_to_end(overrides: list[str]) -> float:
    with tempfile.TemporaryDirectory(prefix="trainkit-startup-") as tmp:
        (Path(tmp) / "startup_probe.py").write_text(PROBE)
        out = Path(tmp) / "probe.json"
        env = {**os.environ, "PYTHONPATH": tmp, "STARTUP_PROBE_OUT": str(out)}
        command = [
            sys.executable,
            str(ROOT / "run.py"),
            *overrides,
            "+callbacks.zz_first_step._target_=startup_probe.FirstStep",
            f"hydra.run.dir={tmp}/run",
            f"tracking.uri=sqlite:///{tmp}/mlflow.db",
        ]
        start = time.time()
        subprocess.run(command, cwd=tmp, env=env, capture_output=True, check=False)
        if not out.exists():
            raise SystemExit("run.py ended before its first step: " + " ".join(command))
        return json.loads(out.read_text())["first_step_end"] - start


def split(overrides: list[str]) -> list[tuple[str, float]]:
    phases: list[tuple[str, float]] = []
    mark = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal mark
        now = time.perf_counter()
        phases.append((name, now - mark))
        mark = now

    import keras
    import mlflow  # noqa: F401
    import tensorflow  # noqa: F401
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from trainkit import job, runtime
    from trainkit.context import JobStatus, RunContext
    from trainkit.data import load as load_data
    from trainkit.models import build_model, resolve_input_shape
    from trainkit.stack import build_stack

    lap("imports")
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    trainer = cfg.trainer
    runtime.configure(OmegaConf.to_container(trainer, resolve=True))
    lap("config")
    shape = resolve_input_shape(cfg.model.name, cfg.data.get("image_size"))
    data = load_data(
        OmegaConf.to_container(cfg.data, resolve=True),
        image_size=shape[:2],
        batch_size=int(trainer.batch_size),
        seed=int(trainer.seed),
    )
    lap("data")
    model = build_model(cfg.model.name, data.num_classes, input_shape=shape)
    lap("model build")
    job.compile_model(model, cfg, data.num_classes)
    lap("compile")
    with tempfile.TemporaryDirectory(prefix="trainkit-startup-") as tmp:
        context = RunContext(
            run_dir=tmp,
            model_name=cfg.model.name,
            class_names=data.class_names,
            batch_size=data.batch_size,
            tracking={"uri": f"sqlite:///{tmp}/mlflow.db", "log_model": False},
        )
        stack = build_stack(cfg.get("callbacks"), context, model)
        lap("callbacks")
        model.fit(data.train, epochs=1, steps_per_epoch=1, callbacks=stack.for_fit(1, 1))
        lap("trace + first step")
        stack.end_job(JobStatus.FINISHED)
    keras.backend.clear_session()
    return phases


def main(argv: list[str] | None = None) -> int:
    overrides = (argv if argv is not None else sys.argv[1:]) or DEFAULT
    from rich.console import Console
    from rich.table import Table

    total = end_to_end(overrides)
    phases = split(overrides)
    table = Table("phase", "seconds", title=f"start-up: run.py {' '.join(overrides)}")
    for name, seconds in phases:
        table.add_row(name, f"{seconds:.1f}")
    table.add_row("sum of the phases (in this process)", f"{sum(s for _, s in phases):.1f}")
    table.add_row("end to end: process start to first step (run.py)", f"{total:.1f}")
    Console().print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
