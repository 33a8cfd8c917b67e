"""AlexNet as the seed table gives it (Krizhevsky et al. 2012, single-tower variant).

227x227x3 input; convolutions 96 (11x11/4), 256 (5x5, pad 2), 384, 384, 256 (3x3, pad 1), each
with ReLU; 3x3/2 max pools after conv 1, 2 and 5; dropout 0.5 before FC 1 and after FC 1;
FC 4096-4096-classes with softmax. 62,378,344 parameters at 1000 classes. No local response
normalisation: the table has none.

Options: ``dropout`` (0.5) and ``fc_units``, the width of FC 1 and FC 2 (4096, the table's).
At a small input most of the parameters are FC 2's 4096x4096: ``fc_units=256`` makes the
model 16 times smaller, for small datasets and for jobs whose subject is not the model.
"""

from __future__ import annotations

import keras
from keras import layers

from trainkit.errors import ConfigError
from trainkit.models.heads import classifier
from trainkit.models.preprocessing import Preprocess
from trainkit.models.registry import ModelSpec, register
from trainkit.models.weights import load_weights_into


def build_alexnet(
    num_classes: int,
    input_shape: tuple[int, int, int],
    weights: str | None = None,
    dropout: float = 0.5,
    fc_units: int = 4096,
) -> keras.Model:
    if isinstance(fc_units, bool) or not isinstance(fc_units, int) or fc_units < 1:
        raise ConfigError(
            f"model.options.fc_units must be a positive whole number, got {fc_units!r} "
            "(4096 is the seed table's)"
        )
    inputs = keras.Input(shape=input_shape, name="image")
    x = Preprocess("tf", name="preprocess")(inputs)
    x = layers.Conv2D(96, 11, strides=4, padding="valid", activation="relu", name="conv1")(x)
    x = layers.MaxPooling2D(3, strides=2, name="pool1")(x)
    x = layers.Conv2D(256, 5, padding="same", activation="relu", name="conv2")(x)
    x = layers.MaxPooling2D(3, strides=2, name="pool2")(x)
    x = layers.Conv2D(384, 3, padding="same", activation="relu", name="conv3")(x)
    x = layers.Conv2D(384, 3, padding="same", activation="relu", name="conv4")(x)
    x = layers.Conv2D(256, 3, padding="same", activation="relu", name="conv5")(x)
    x = layers.MaxPooling2D(3, strides=2, name="pool3")(x)
    x = layers.Dropout(dropout, name="dropout1")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(fc_units, activation="relu", name="fc1")(x)
    x = layers.Dropout(dropout, name="dropout2")(x)
    x = layers.Dense(fc_units, activation="relu", name="fc2")(x)
    outputs = classifier(x, num_classes)
    model = keras.Model(inputs, outputs, name="alexnet")
    if weights:
        load_weights_into(model, weights, head_layers=("predictions",))
    return model


register(
    ModelSpec(
        name="alexnet",
        family="alexnet",
        native_size=227,
        # 11x11/4 conv and three 3x3/2 pools need at least 67 pixels to keep a 1x1 map.
        min_size=67,
        preprocessing="tf",
        builder=build_alexnet,
        description="AlexNet, 5 conv + 3 FC, as the seed table (62.4 M params)",
        options={"dropout": 0.5, "fc_units": 4096},
    )
)
