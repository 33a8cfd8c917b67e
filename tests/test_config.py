"""Every option of every config group composes the way users compose it."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from trainkit.data import SOURCES

CONF = Path(__file__).resolve().parents[1] / "conf"
GROUPS = [
    "model",
    "data",
    "callbacks",
    "optimizer",
    "trainer",
    "tracking",
    "debug",
    "hparams_search",
]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize(
    ("group", "option"), [(g, o) for g in GROUPS for o in options(g)], ids=lambda v: str(v)
)
def test_every_option_composes(compose_cfg, group, option):
    cfg = compose_cfg([f"{group}={option}"])
    OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves
    if group == "callbacks":
        for name, entry in (cfg.callbacks or {}).items():
            assert "_target_" in entry, name
    if group == "model":
        assert cfg.model.name == option
    if group == "data":
        assert cfg.data.name == option and option in SOURCES


@pytest.mark.parametrize("option", options("experiment"))
def test_experiment_overlays_compose(compose_cfg, option):
    cfg = compose_cfg([f"experiment={option}"])
    OmegaConf.to_container(cfg, resolve=True)


def test_defaults(compose_cfg):
    cfg = compose_cfg([])
    assert cfg.model.name == "alexnet"
    assert cfg.data.name == "digits"
    assert cfg.optimizer._target_ == "keras.optimizers.Adam"
    assert cfg.tracking.uri == "sqlite:///mlflow.db"
    assert cfg.data.image_size is None and cfg.data.limit is None
    for key in ("epochs", "batch_size", "steps_per_execution", "seed"):
        assert key in cfg.trainer


def test_callback_entries_added_and_removed(compose_cfg):
    cfg = compose_cfg(
        ["callbacks=full", "+callbacks.mine._target_=pkg.Mine", "+callbacks.mine.every=10"]
    )
    assert cfg.callbacks.mine == {"_target_": "pkg.Mine", "every": 10}
    first = next(iter(cfg.callbacks))
    cfg = compose_cfg(["callbacks=full", f"~callbacks.{first}"])
    assert first not in cfg.callbacks
    cfg = compose_cfg(["callbacks=none", "+callbacks.mine._target_=pkg.Mine"])
    assert list(cfg.callbacks) == ["mine"]


def test_debug_fast_is_small(compose_cfg):
    cfg = compose_cfg(["debug=fast"])
    assert cfg.trainer.epochs == 1 and cfg.trainer.steps_per_epoch <= 5


def test_unknown_option_lists_the_choices(compose_cfg):
    with pytest.raises(ConfigCompositionException) as err:
        compose_cfg(["model=nonexistent"])
    assert "alexnet" in str(err.value.__cause__ or err.value)
