"""GoogLeNet (Inception v1, Szegedy et al. 2014, "Going Deeper with Convolutions"), by hand.

Table 1 of the paper: a 7x7/2 convolution, 3x3/2 max pool, 1x1 + 3x3 convolutions, nine
Inception modules with 1x1, 3x3 (after a 1x1 reduction), 5x5 (after a 1x1 reduction) and
pool-projection branches, global average pooling, 40% dropout and a softmax classifier. Every
convolution has a bias and a ReLU; there is no batch normalisation. Local response
normalisation is omitted (later work showed it does not help). Pools round up as in Caffe.

Two auxiliary classifiers sit on Inception 4a and 4d: 5x5/3 average pooling to 4x4, a 1x1
convolution with 128 filters, a 1024-unit fully connected layer, 70% dropout and a softmax. They
only act during training, where each adds 0.3 x its cross-entropy to the loss; evaluation,
prediction and export see the main classifier alone (:class:`GoogLeNet`).

6,998,552 parameters at 1000 classes without the auxiliary heads, 13,378,280 with them.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import layers

from trainkit.models.blocks import FixedGridAveragePool, max_pool_ceil
from trainkit.models.heads import classifier
from trainkit.models.preprocessing import Preprocess
from trainkit.models.registry import ModelSpec, register
from trainkit.models.weights import load_weights_into

# name: (1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool projection), Table 1.
MODULES = {
    "3a": (64, 96, 128, 16, 32, 32),
    "3b": (128, 128, 192, 32, 96, 64),
    "4a": (192, 96, 208, 16, 48, 64),
    "4b": (160, 112, 224, 24, 64, 64),
    "4c": (128, 128, 256, 24, 64, 64),
    "4d": (112, 144, 288, 32, 64, 64),
    "4e": (256, 160, 320, 32, 128, 128),
    "5a": (256, 160, 320, 32, 128, 128),
    "5b": (384, 192, 384, 48, 128, 128),
}
AUX_LOSS_WEIGHT = 0.3


def _conv(x, filters: int, kernel: int, name: str, strides: int = 1):
    return layers.Conv2D(
        filters, kernel, strides=strides, padding="same", activation="relu", name=name
    )(x)


def inception_module(x, name: str):
    b1, r3, b3, r5, b5, proj = MODULES[name]
    prefix = f"inception_{name}"
    branch1 = _conv(x, b1, 1, f"{prefix}_1x1")
    branch3 = _conv(_conv(x, r3, 1, f"{prefix}_3x3_reduce"), b3, 3, f"{prefix}_3x3")
    branch5 = _conv(_conv(x, r5, 1, f"{prefix}_5x5_reduce"), b5, 5, f"{prefix}_5x5")
    pool = layers.MaxPooling2D(3, strides=1, padding="same", name=f"{prefix}_pool")(x)
    pool = _conv(pool, proj, 1, f"{prefix}_pool_proj")
    return layers.Concatenate(name=f"{prefix}_output")([branch1, branch3, branch5, pool])


def aux_head(x, num_classes: int, name: str, dropout: float):
    """An auxiliary classifier; every layer is named ``head*`` (see ``is_head_layer``)."""
    x = FixedGridAveragePool(4, name=f"{name}_pool")(x)
    x = _conv(x, 128, 1, f"{name}_conv")
    x = layers.Flatten(name=f"{name}_flatten")(x)
    x = layers.Dense(1024, activation="relu", name=f"{name}_fc")(x)
    x = layers.Dropout(dropout, name=f"{name}_dropout")(x)
    return classifier(x, num_classes, name=f"{name}_predictions")


def googlenet_graph(
    num_classes: int,
    input_shape: tuple[int, int, int],
    dropout: float = 0.4,
    aux_dropout: float = 0.7,
    aux_heads: bool = True,
):
    """The symbolic graph: ``(inputs, main_output, [aux1, aux2])``."""
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = Preprocess("tf", name="preprocess")(inputs)
    x = _conv(x, 64, 7, "conv1_7x7", strides=2)
    x = max_pool_ceil(x, "pool1")
    x = _conv(x, 64, 1, "conv2_3x3_reduce")
    x = _conv(x, 192, 3, "conv2_3x3")
    x = max_pool_ceil(x, "pool2")
    x = inception_module(x, "3a")
    x = inception_module(x, "3b")
    x = max_pool_ceil(x, "pool3")
    aux = []
    for name in ("4a", "4b", "4c", "4d", "4e"):
        x = inception_module(x, name)
        if aux_heads and name in ("4a", "4d"):
            aux.append(aux_head(x, num_classes, f"head_aux{len(aux) + 1}", aux_dropout))
    x = max_pool_ceil(x, "pool4")
    x = inception_module(x, "5a")
    x = inception_module(x, "5b")
    # The paper's 7x7 average pool is global at 224 pixels; global pooling keeps it so at any size.
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    return inputs, classifier(x, num_classes), aux


@keras.saving.register_keras_serializable(package="trainkit")
class GoogLeNet(keras.Model):
    """GoogLeNet whose auxiliary classifiers exist for training only.

    The model itself is the inference graph (image -> main softmax): ``predict``, ``evaluate``,
    ``model.outputs`` and :meth:`export` see one output. ``call(training=True)`` also returns the
    two auxiliary softmaxes, and :meth:`compute_loss` adds ``aux_loss_weight`` x the compiled loss
    of each to the main loss. The auxiliary layers are listed in :attr:`layers` (named
    ``head_aux*``) and saved in ``.keras`` / ``.weights.h5`` files so that training can resume.
    """

    def __init__(
        self,
        num_classes: int,
        input_shape: tuple[int, int, int] | list[int],
        dropout: float = 0.4,
        aux_dropout: float = 0.7,
        aux_loss_weight: float = AUX_LOSS_WEIGHT,
        name: str = "inception_v1",
        **kwargs: Any,
    ) -> None:
        inputs, output, aux = googlenet_graph(
            num_classes, tuple(input_shape), dropout, aux_dropout, aux_heads=True
        )
        super().__init__(inputs, output, name=name, **kwargs)
        self.training_network = keras.Model(inputs, [output, *aux], name=f"{name}_training")
        self.num_classes = num_classes
        self.image_shape = tuple(input_shape)
        self.dropout = dropout
        self.aux_dropout = aux_dropout
        self.aux_loss_weight = aux_loss_weight

    @property
    def layers(self) -> list[keras.layers.Layer]:
        main = list(super().layers)
        network = getattr(self, "training_network", None)  # absent while Functional initialises
        if network is None:
            return main
        seen = {id(layer) for layer in main}
        return main + [layer for layer in network.layers if id(layer) not in seen]

    def call(self, inputs, training=None, mask=None):
        if training:
            return tuple(self.training_network(inputs, training=True))
        return super().call(inputs, training=training, mask=mask)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        if not isinstance(y_pred, tuple):
            return super().compute_loss(x, y, y_pred, sample_weight, training=training)
        main, *aux = y_pred
        loss = super().compute_loss(x, y, main, sample_weight, training=training)
        for aux_pred in aux:
            # The compiled loss of a single-output model is stateless: reuse it for each head.
            loss = loss + self.aux_loss_weight * self._compile_loss(y, aux_pred, sample_weight)
        return loss

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        if isinstance(y_pred, tuple):
            y_pred = y_pred[0]
        return super().compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    def inference_model(self) -> keras.Model:
        """A plain functional model image -> main softmax, sharing this model's layers."""
        return keras.Model(self.input, self.output, name=self.name)

    def export(self, filepath, format="tf_saved_model", **kwargs):
        """Export the inference graph only: the artefact has neither aux outputs nor weights."""
        return self.inference_model().export(filepath, format=format, **kwargs)

    def get_config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "num_classes": self.num_classes,
            "input_shape": list(self.image_shape),
            "dropout": self.dropout,
            "aux_dropout": self.aux_dropout,
            "aux_loss_weight": self.aux_loss_weight,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any], custom_objects=None) -> GoogLeNet:
        return cls(**config)


def build_inception_v1(
    num_classes: int,
    input_shape: tuple[int, int, int],
    weights: str | None = None,
    dropout: float = 0.4,
    aux_heads: bool = True,
    aux_dropout: float = 0.7,
    aux_loss_weight: float = AUX_LOSS_WEIGHT,
) -> keras.Model:
    if aux_heads:
        model: keras.Model = GoogLeNet(
            num_classes, input_shape, dropout, aux_dropout, aux_loss_weight
        )
    else:
        inputs, output, _ = googlenet_graph(num_classes, input_shape, dropout, aux_heads=False)
        model = keras.Model(inputs, output, name="inception_v1")
    if weights:
        load_weights_into(model, weights)
    return model


register(
    ModelSpec(
        name="inception_v1",
        family="inception_v1",
        native_size=224,
        # Caffe-style pools need a 2-pixel map before pool 4; 31 pixels is the least that gives it.
        min_size=31,
        preprocessing="tf",
        builder=build_inception_v1,
        description="GoogLeNet (Inception v1), 9 Inception modules, 2 training-only aux heads",
        options={"dropout": 0.4, "aux_heads": True, "aux_dropout": 0.7, "aux_loss_weight": 0.3},
    )
)
