"""``python run.py task=predict checkpoint=PATH inputs=FILE_OR_DIR``: top-k classes per image.

Loads a ``.keras`` checkpoint, classifies one image or every image in a folder, prints the
top-k classes with their names and probabilities, and writes them to ``predictions.csv`` in
the run directory. Class names come from the ``class_names.json`` that training wrote next to
the checkpoints (ImageNet names for a 1000-class ImageNet head).
"""

from __future__ import annotations

from omegaconf import DictConfig

from trainkit.errors import ConfigError


def predict(cfg: DictConfig) -> list[dict]:
    from trainkit import runtime

    runtime.quiet_tensorflow()
    from trainkit.hydra_run import output_dir
    from trainkit.topk import run_predict_task

    if not cfg.get("checkpoint"):
        raise ConfigError("task=predict needs checkpoint=PATH (a .keras file from a run)")
    if not cfg.get("inputs"):
        raise ConfigError("task=predict needs inputs=FILE_OR_DIR (an image or a folder of images)")
    run_dir = output_dir(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_predict_task(
        str(cfg.checkpoint),
        str(cfg.inputs),
        output_csv=run_dir / "predictions.csv",
        top_k=int(cfg.get("top_k") or 5),
    )
