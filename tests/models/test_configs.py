"""conf/model/*.yaml: one per model, with the options its builder takes."""

from __future__ import annotations

import inspect

import pytest
import yaml

from tests.models.conftest import MODEL_CONF
from trainkit.errors import ConfigError
from trainkit.models import available_models, build_model, get_spec


def test_one_config_per_model():
    assert sorted(p.stem for p in MODEL_CONF.glob("*.yaml")) == available_models()


@pytest.mark.parametrize("name", available_models())
def test_config(name):
    text = (MODEL_CONF / f"{name}.yaml").read_text()
    assert text.startswith("# ")
    cfg = yaml.safe_load(text)
    assert set(cfg) == {"name", "weights", "freeze_backbone", "options"}
    assert cfg["name"] == name and cfg["weights"] is None and cfg["freeze_backbone"] is False
    spec = get_spec(name)
    assert cfg["options"] == spec.options
    parameters = inspect.signature(spec.builder).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    assert takes_any or set(cfg["options"]) <= set(parameters)


@pytest.mark.parametrize("name", ["clip_resnet50", "vgg16", "inception_v1"])
def test_unknown_options_are_one_line_errors(name):
    with pytest.raises(ConfigError) as error:
        build_model(name, 3, input_shape=64, no_such_option=1)
    message = str(error.value)
    assert "no_such_option" in message and "\n" not in message
    for option in get_spec(name).options:
        assert option in message


@pytest.mark.parametrize("units", [0, -1, 2.5, True, "256"])
def test_alexnet_fc_units_must_be_a_positive_whole_number(units):
    with pytest.raises(ConfigError) as error:
        build_model("alexnet", 3, input_shape=67, fc_units=units)
    assert str(error.value).startswith(
        f"model.options.fc_units must be a positive whole number, got {units!r}"
    )
