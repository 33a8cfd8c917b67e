"""Every model builds at its minimum input in mixed_bfloat16, and trains a step.

The models are built for 1000 classes: the eight of test_param_counts.HEAVY have their trainable
parameters checked against the reference table here, where they are built anyway (building
them again at their native size cost ~25 s).

Two models are built and checked but not stepped: :data:`SAME_LAYERS_AS`. They are another
zoo model's layers at another depth or width (CLIP's ResNet-101 and its 16x-wide ResNet), and
their step took 11-13 and 26 s of the suite's budget against 5-8 s for ResNet-50 and 4x.

A float32 epoch through the whole job, for one model of each family, is
tests/models/test_every_model_job.py.

The per-model steps run eagerly: tracing the train function of the deepest models takes 20 s
on two cores, an eager step one or two. The custom layers run in compiled functions in
test_clip.py and test_inception_v1.py.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

from tests.models.conftest import images, model_options
from tests.models.test_param_counts import HEAVY, assert_reference_count
from trainkit.models import available_models, build_model, get_spec

CAFFE = {"vgg16", "vgg19", "resnet50"}  # BGR minus the ImageNet mean; CLIP's own; else [-1, 1]
# model -> the model whose blocks (trainkit/models/clip_resnet.py) it repeats, stepped here
SAME_LAYERS_AS = {"clip_resnet101": "clip_resnet50", "clip_resnet50x16": "clip_resnet50x4"}


def compile_eagerly(model: keras.Model) -> None:
    model.compile(
        optimizer=keras.optimizers.SGD(0.01),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        run_eagerly=True,
    )


# a training step of each model: up to 25 s each: not in the fast subset.
pytestmark = pytest.mark.slow


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(name, id=f"{name}-built-only" if name in SAME_LAYERS_AS else name)
        for name in available_models()
    ],
)
def test_builds_in_bfloat16_and_trains_a_step_at_the_minimum_size(name):
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    size = get_spec(name).min_size
    model = build_model(name, 1000, input_shape=size, **model_options(name))
    if name in HEAVY:
        assert_reference_count(name, model)
    kind = "caffe" if name in CAFFE else "clip" if name.startswith("clip") else "tf"
    assert get_spec(name).preprocessing == model.get_layer("preprocess").kind == kind
    assert model.layers[1].name == "preprocess"  # the first layer after the input
    convolutions = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)] or [
        model.get_layer("backbone")
    ]
    assert convolutions[0].compute_dtype == "bfloat16"
    assert model.get_layer("predictions").compute_dtype == "float32"
    if name in SAME_LAYERS_AS:
        return  # its blocks take a step in SAME_LAYERS_AS[name]'s case
    compile_eagerly(model)
    # Predictions before the step: after one SGD step on 2 images whose last feature map is
    # 1x1, BatchNorm's moving statistics lag the weights and the models may overflow.
    probabilities = model.predict_on_batch(images(size))
    assert probabilities.shape == (2, 1000)
    assert probabilities.dtype == np.float32  # the float32 classifier, whatever the policy
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    logs = model.train_on_batch(images(size), np.array([0, 2]), return_dict=True)
    assert np.isfinite(logs["loss"])


def test_any_number_of_classes():
    model = build_model("inception_v1", 1, input_shape=40)
    assert model.output_shape == (None, 1)
    model = build_model("alexnet", 37, input_shape=(80, 120))
    assert model.output_shape == (None, 37)


def test_every_model_built_only_has_its_blocks_stepped_in_another():
    stepped = set(available_models()) - set(SAME_LAYERS_AS)
    assert set(SAME_LAYERS_AS.values()) <= stepped
    assert set(SAME_LAYERS_AS) <= set(available_models())
