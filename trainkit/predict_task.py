"""``python run.py task=predict checkpoint=PATH inputs=FILE_OR_DIR``: top-k classes per image.

Loads a ``.keras`` checkpoint, classifies one image or every image in a folder, prints the
top-k classes with their names and probabilities, and writes them to ``predictions.csv`` in
the run directory. Class names come from the ``class_names.json`` that training wrote next to
the checkpoints (ImageNet names for a 1000-class ImageNet head).
"""

from __future__ import annotations

from omegaconf import DictConfig

from trainkit.errors import ConfigError, DataNotFoundError


def check_inputs(checkpoint: str | None, inputs: str | None) -> None:
    """What ``task=predict`` needs, checked before TensorFlow loads: the checkpoint file (a
    Keras model file) and the images. Raises a :class:`TrainkitError` naming the key."""
    from pathlib import Path

    from trainkit.config.files import check_weights_file

    if not checkpoint:
        raise ConfigError("task=predict needs checkpoint=PATH (a .keras file from a run)")
    if not inputs:
        raise ConfigError("task=predict needs inputs=FILE_OR_DIR (an image or a folder of images)")
    path = check_weights_file(str(checkpoint), key="checkpoint")
    if not path.name.endswith(".keras"):
        raise ConfigError(
            f"checkpoint={path}: expected a .keras file (as a run's checkpoints/*.keras)"
        )
    if not Path(str(inputs)).expanduser().exists():
        raise DataNotFoundError(f"inputs={inputs}: no such image file or folder")


def predict(cfg: DictConfig) -> list[dict]:
    from trainkit import runtime

    runtime.quiet_tensorflow()
    from trainkit.hydra_run import output_dir
    from trainkit.topk import run_predict_task

    check_inputs(cfg.get("checkpoint"), cfg.get("inputs"))
    run_dir = output_dir(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_predict_task(
        str(cfg.checkpoint),
        str(cfg.inputs),
        output_csv=run_dir / "predictions.csv",
        top_k=int(cfg.get("top_k") or 5),
    )
