"""The keras.applications families: VGG16/19, ResNet50 (v1, v2), MobileNetV2, Inception-ResNet-v2.

Each model is ``image -> Preprocess -> backbone -> top``, where the backbone is the application
built with ``include_top=False`` (one nested model named ``backbone``) and the top is the
family's original one, rebuilt here so that the parameter counts equal Keras' and the classifier
is ours: VGG's Flatten, ``fc1``/``fc2`` (4096 units, counted as backbone) and ``predictions``;
global average pooling and ``predictions`` for the others.

``weights="imagenet"`` loads Keras' files from its cache (see :mod:`trainkit.models.imagenet`):
with 1000 classes (and, for VGG, the native 224 pixels) the full ImageNet top is loaded too, so
``decode_predictions`` applies; otherwise only the backbone, and the head starts fresh.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import keras
from keras import layers

from trainkit.errors import ConfigError, WeightsNotAvailableError
from trainkit.models.heads import classifier
from trainkit.models.imagenet import BASE_URL, WeightsFile, fetch
from trainkit.models.preprocessing import Preprocess
from trainkit.models.registry import ModelSpec, register
from trainkit.models.weights import load_weights_into, one_line

IMAGENET_CLASSES = 1000


@dataclass(frozen=True)
class Application:
    """One keras.applications model as the zoo registers it, and where its ImageNet files are."""

    name: str
    constructor: str  # attribute of keras.applications
    native_size: int
    min_size: int  # what keras.applications accepts (smaller inputs fail to build)
    preprocessing: str
    flatten_top: bool  # VGG's Flatten + 2 x Dense(4096) top instead of global average pooling
    weights_file: Callable[[bool, tuple[int, int, int], dict], WeightsFile]
    description: str


def _fixed_files(folder: str, stem: str, top_md5: str, notop_md5: str):
    def weights_file(include_top: bool, input_shape, options) -> WeightsFile:
        name = f"{stem}.h5" if include_top else f"{stem}_notop.h5"
        md5 = top_md5 if include_top else notop_md5
        return WeightsFile(name, f"{BASE_URL}{folder}/{name}", md5)

    return weights_file


def _mobilenet_v2_file(include_top: bool, input_shape, options) -> WeightsFile:
    # Keras ships one file per alpha and per square input in 96..224, and uses 224 otherwise.
    rows = input_shape[0] if input_shape[0] == input_shape[1] else 224
    rows = rows if rows in (96, 128, 160, 192, 224) else 224
    alpha = float(options.get("alpha", 1.0))
    suffix = ".h5" if include_top else "_no_top.h5"
    name = f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{alpha}_{rows}{suffix}"
    return WeightsFile(name, f"{BASE_URL}mobilenet_v2/{name}")


APPLICATIONS = (
    Application(
        "vgg16", "VGG16", 224, 32, "caffe", True,
        _fixed_files("vgg16", "vgg16_weights_tf_dim_ordering_tf_kernels",
                     "64373286793e3c8b2b4e3219cbf3544b", "6d6bbae143d832006294945121d1f1fc"),
        "VGG16, 13 conv + 3 FC (keras.applications)",
    ),
    Application(
        "vgg19", "VGG19", 224, 32, "caffe", True,
        _fixed_files("vgg19", "vgg19_weights_tf_dim_ordering_tf_kernels",
                     "cbe5617147190e668d6c5d5026f83318", "253f8cb515780f3b799900260a226db6"),
        "VGG19, 16 conv + 3 FC (keras.applications)",
    ),
    Application(
        "resnet50", "ResNet50", 224, 32, "caffe", False,
        _fixed_files("resnet", "resnet50_weights_tf_dim_ordering_tf_kernels",
                     "2cb95161c43110f7111970584f804107", "4d473c1dd8becc155b73f8504c6f6626"),
        "ResNet-50 v1 (keras.applications)",
    ),
    Application(
        "resnet50_v2", "ResNet50V2", 224, 32, "tf", False,
        _fixed_files("resnet", "resnet50v2_weights_tf_dim_ordering_tf_kernels",
                     "3ef43a0b657b3be2300d5770ece849e0", "fac2f116257151a9d068a22e544a4917"),
        "ResNet-50 v2, pre-activation (keras.applications)",
    ),
    Application(
        "mobilenet_v2", "MobileNetV2", 224, 32, "tf", False, _mobilenet_v2_file,
        "MobileNetV2, inverted residuals, alpha option (keras.applications)",
    ),
    Application(
        "inception_resnet_v2", "InceptionResNetV2", 299, 75, "tf", False,
        _fixed_files("inception_resnet_v2",
                     "inception_resnet_v2_weights_tf_dim_ordering_tf_kernels",
                     "e693bd0210a403b3192acc6073ad2e96", "d19885ff4a710c122648d3b5c3b684e4"),
        "Inception-ResNet-v2 (keras.applications)",
    ),
)  # fmt: skip


def _constructor_kwargs(app: Application, options: dict) -> dict:
    allowed = {"alpha"} if app.name == "mobilenet_v2" else set()
    unknown = set(options) - allowed
    if unknown:
        known = ", ".join(["dropout", "download_weights", *sorted(allowed)])
        raise ConfigError(
            f"model '{app.name}' has no option {', '.join(sorted(unknown))}: its options are "
            f"{known}"
        )
    return options


def _backbone(app: Application, input_shape, weights: str | None, **kwargs) -> keras.Model:
    constructor = getattr(keras.applications, app.constructor)
    return constructor(
        include_top=False,
        weights=weights,
        input_shape=tuple(input_shape),
        name="backbone",
        **kwargs,
    )


def build_application(
    num_classes: int,
    input_shape: tuple[int, int, int],
    weights: str | None = None,
    dropout: float | None = None,
    download_weights: bool = False,
    *,
    app: Application,
    **options,
) -> keras.Model:
    """Build ``app`` with a ``num_classes`` head; see the module docstring for ``weights``.

    Options:
        dropout: dropout before the classifier (and after fc1 / fc2 for VGG); the Keras tops
            have none, so the default is 0.5 for VGG (as in the paper) and 0 for the others.
        download_weights: let Keras download a missing ImageNet file.
        alpha: MobileNetV2's width multiplier (1.0).
    """
    kwargs = _constructor_kwargs(app, options)
    if dropout is None:
        dropout = 0.5 if app.flatten_top else 0.0
    imagenet = weights == "imagenet"
    backbone_file = top_file = None
    if imagenet:
        # Look for the file before building: it may be missing, and VGG takes seconds to build.
        native = tuple(input_shape[:2]) == (app.native_size, app.native_size)
        full_top = num_classes == IMAGENET_CLASSES and (native or not app.flatten_top)
        found = fetch(app.name, app.weights_file(full_top, input_shape, kwargs), download_weights)
        top_file, backbone_file = (found, None) if full_top else (None, found)

    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = Preprocess(app.preprocessing, name="preprocess")(inputs)
    try:
        backbone_weights = str(backbone_file) if backbone_file else None
        backbone = _backbone(app, input_shape, backbone_weights, **kwargs)
    except (OSError, ValueError) as exc:
        if backbone_file is None:
            raise
        raise WeightsNotAvailableError(f"cannot load {backbone_file}: {one_line(exc)}") from None
    x = backbone(x)
    if app.flatten_top:
        x = layers.Flatten(name="flatten")(x)
        x = layers.Dense(4096, activation="relu", name="fc1")(x)
        x = layers.Dropout(dropout, name="dropout1")(x)
        x = layers.Dense(4096, activation="relu", name="fc2")(x)
        x = layers.Dropout(dropout, name="dropout2")(x)
    else:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        if dropout:
            x = layers.Dropout(dropout, name="head_dropout")(x)
    model = keras.Model(inputs, classifier(x, num_classes), name=app.name)

    if top_file is not None:
        _load_full_top(app, model, input_shape, top_file, kwargs)
    elif weights and not imagenet:
        load_weights_into(model, weights)
    return model


def _load_full_top(app: Application, model: keras.Model, input_shape, path, kwargs) -> None:
    """Load the with-top ImageNet file: build Keras' full model from it, copy layer by layer."""
    constructor = getattr(keras.applications, app.constructor)
    try:
        reference = constructor(
            include_top=True, weights=str(path), input_shape=tuple(input_shape), **kwargs
        )
    except (OSError, ValueError) as exc:
        raise WeightsNotAvailableError(f"cannot load {path}: {one_line(exc)}") from None
    backbone = model.get_layer("backbone")
    inner = {layer.name: layer for layer in backbone.layers}
    outer = {layer.name: layer for layer in model.layers}
    for layer in reference.layers:
        if not layer.weights:
            continue
        target = inner.get(layer.name) or outer.get(layer.name)
        if target is None:
            raise WeightsNotAvailableError(
                f"{path} has a layer '{layer.name}' that model '{app.name}' lacks"
            )
        target.set_weights(layer.get_weights())


for _app in APPLICATIONS:
    register(
        ModelSpec(
            name=_app.name,
            family="applications",
            native_size=_app.native_size,
            min_size=_app.min_size,
            preprocessing=_app.preprocessing,
            builder=partial(build_application, app=_app),
            imagenet_weights=True,
            description=_app.description,
            options=(
                {"dropout": 0.5 if _app.flatten_top else 0.0, "download_weights": False}
                | ({"alpha": 1.0} if _app.name == "mobilenet_v2" else {})
            ),
        )
    )
