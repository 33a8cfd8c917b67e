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


# -- the typed schema (trainkit.config.schema) ------------------------------------------------


def test_groups_are_typed_by_their_schema(compose_cfg):
    from trainkit.config.schema import Config, DataConfig, TrackingConfig, TrainerConfig

    cfg = compose_cfg([])
    assert OmegaConf.get_type(cfg) is Config
    assert OmegaConf.get_type(cfg.trainer) is TrainerConfig
    assert OmegaConf.get_type(cfg.data) is DataConfig
    assert OmegaConf.get_type(cfg.tracking) is TrackingConfig
    assert cfg.trainer.strategy == "auto" and cfg.trainer.cluster_timeout == 300.0
    assert cfg.trainer.devices is None and cfg.trainer.resume is None
    assert cfg.trainer.deterministic is False
    # A value of the right type converts as Hydra composes: "3" -> 3.
    assert compose_cfg(["trainer.epochs=3"]).trainer.epochs == 3


def test_a_wrong_type_fails_while_composing_and_names_the_key(compose_cfg):
    from omegaconf.errors import ValidationError

    with pytest.raises(ConfigCompositionException) as err:
        compose_cfg(["trainer.epochs=abc"])
    assert isinstance(err.value.__cause__, ValidationError)
    assert err.value.__cause__.full_key == "trainer.epochs"


def test_validate_names_every_bad_key_at_once(compose_cfg):
    from trainkit.config.schema import validate
    from trainkit.errors import ConfigError

    validate(compose_cfg([]))  # the defaults are valid
    with pytest.raises(ConfigError) as err:
        validate(compose_cfg(["trainer.epochs=0", "data.limit=0", "optimizer.learning_rate=-1"]))
    message = str(err.value)
    assert "\n" not in message
    for key in ("trainer.epochs=0", "data.limit=0", "optimizer.learning_rate=-1"):
        assert key in message


@pytest.mark.parametrize("option", options("experiment"))
def test_every_shipped_overlay_is_valid(compose_cfg, option):
    from trainkit.config.schema import validate

    validate(compose_cfg([f"experiment={option}"]))


def test_a_config_missing_from_a_defaults_list_is_not_called_a_run_directory_error(tmp_path):
    # Hydra's MissingConfigException is an OSError; it once read "cannot create the run directory"
    from hydra import compose, initialize_config_dir
    from hydra.errors import MissingConfigException

    from trainkit.errors import hydra_error

    (tmp_path / "config.yaml").write_text("defaults:\n  - missing/thing\n  - _self_\nx: 1\n")
    with (
        pytest.raises(MissingConfigException) as caught,
        initialize_config_dir(config_dir=str(tmp_path), version_base="1.3"),
    ):
        compose("config")
    message = hydra_error(caught.value, [])
    assert message.startswith("In 'config': Could not load 'missing/thing'. (a config that")
    assert "run directory" not in message and "\n" not in message


PLAIN = ["model=vgg16", "trainer.epochs=2", "hydra.run.dir=/tmp/x", "+experiment=finetune"]


@pytest.mark.parametrize(
    ("overrides", "composes", "mode"),
    [
        ([], False, None),
        (PLAIN, False, None),
        (["debug=fast", "callbacks=full", "~callbacks.early_stopping"], False, None),
        (["hparams_search=lr"], True, "MULTIRUN"),  # conf/hparams_search/lr.yaml sets it
        (["experiment=compare"], True, "MULTIRUN"),
        (["hydra.mode=MULTIRUN"], True, "MULTIRUN"),
        (["hydra/launcher=joblib"], True, None),  # Hydra's own groups: asked, to be safe
    ],
)
def test_run_py_composes_the_config_once_unless_a_chosen_config_sets_hydra_mode(
    overrides, composes, mode
):
    """run.py's get_mode (trainkit.config.hydra_mode, hydra#3440) answers what Hydra's own
    answers, composing only where a config the overrides choose may set hydra.mode."""
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import create_config_search_path
    from hydra.core.global_hydra import GlobalHydra

    from trainkit.config.hydra_mode import compose_once
    from trainkit.config.schema import register

    register()
    original = Hydra.get_mode
    GlobalHydra.instance().clear()
    hydra = Hydra.create_main_hydra2("run", create_config_search_path(str(CONF)))
    try:
        expected = original(hydra, config_name="config", overrides=list(overrides))
        compose_once(CONF)
        calls = []
        compose = hydra.compose_config
        hydra.compose_config = lambda *a, **k: calls.append(1) or compose(*a, **k)
        assert hydra.get_mode(config_name="config", overrides=list(overrides)) == expected
        assert bool(calls) == composes
        assert (expected and expected.name) == mode
    finally:
        Hydra.get_mode = original
        GlobalHydra.instance().clear()
