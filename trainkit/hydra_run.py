"""What Hydra says about the running job: its run directory and the options chosen per group.

Both tasks (``trainkit.job`` for training, ``trainkit.predict_task``) read these; they live here
so that neither task imports the other.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from trainkit.errors import ConfigError


def output_dir(cfg: DictConfig) -> Path:
    """Hydra's run directory (``hydra.run.dir``), or ``paths.output_dir`` when set by hand."""
    from hydra.core.hydra_config import HydraConfig

    configured = OmegaConf.select(cfg, "paths.output_dir", throw_on_resolution_failure=False)
    if configured:
        return Path(configured).resolve()
    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir).resolve()
    raise ConfigError("no run directory: run through run.py or set paths.output_dir=DIR")


def hydra_choice(group: str) -> str:
    """The option chosen for a config group (``full`` for ``callbacks=full``), if known."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        choice = HydraConfig.get().runtime.choices.get(group)
        if choice:
            return str(choice)
    return "custom"
