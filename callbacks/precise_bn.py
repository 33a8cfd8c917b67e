"""BatchNormalization's moving statistics recomputed from training batches before evaluation."""

from __future__ import annotations

import itertools
import logging
import warnings
from collections.abc import Iterable
from typing import Any

import keras

from callbacks.base import TrainkitCallback

log = logging.getLogger(__name__)


class PreciseBatchNorm(TrainkitCallback):
    """Before each evaluation, sets every trainable ``BatchNormalization`` layer's moving mean
    and variance to the average of its batch statistics over ``num_batches`` training batches,
    computed with the current weights ("precise BN", as in pycls and Detectron2).

    Why: Keras's moving statistics are an exponential average with ``momentum`` 0.99
    (MobileNetV2: 0.999). After a few hundred steps most of each is still its initial value
    (0.99^120 = 30%), so a model that trains well evaluates at chance: the source documents'
    comparison (``experiment=compare``, 120 steps a model) showed it for every Keras model with
    BatchNorm. Averaging the batch statistics of the trained weights removes that dependence
    on the schedule; with enough steps it changes little.

    When: at ``on_test_begin`` (the validation of each epoch, and ``evaluate``), if the model
    took an optimizer step since the last recomputation. Validation metrics, the checkpoint
    saved at the epoch's end, early stopping's best weights and the final test therefore all
    see the same statistics, and an evaluation after weights were restored (early stopping's
    ``restore_best_weights``) keeps the statistics saved with them.

    Layers that are not trainable (a frozen backbone) keep theirs: Keras runs them in inference
    mode. Models without BatchNorm are left alone at no cost. Under a strategy with several
    replicas it warns once and does nothing (each replica would need the same batches).

    Hooks: ``set_model``, ``on_train_begin``, ``on_test_begin``.

    Args:
        num_batches: training batches to average over (about 1,000-2,000 images is enough).
        data: batches to read (a ``tf.data.Dataset`` or an iterable of ``(x, ...)`` or ``x``);
            in a trainkit job, default: one pass over the training split, as the job batches
            it (``RunContext.train_data``).

    Attributes:
        recomputed: how many times the statistics were recomputed.
        layers: the BatchNormalization layers it updates.

    Example::

        model.fit(train, validation_data=val, callbacks=[PreciseBatchNorm(num_batches=50,
                                                                          data=train)])
        # a job: python run.py model=resnet50 +callbacks/entry@callbacks.precise_bn=precise_bn
    """

    def __init__(self, num_batches: int = 50, data: Any = None) -> None:
        super().__init__()
        if int(num_batches) < 1:
            raise ValueError(f"num_batches must be at least 1, got {num_batches}")
        self.num_batches = int(num_batches)
        self.data = data
        self.recomputed = 0
        self.layers: list[Any] = []
        self._at_step: int | None = None  # optimizer iterations at the last recomputation
        self._warned = False
        self._momentum: Any = None  # a tf.Variable, the layers' momentum while recomputing
        self._forward: Any = None  # the traced forward pass in training mode

    def set_model(self, model: Any) -> None:
        if model is not getattr(self, "model", None):
            self._forward, self._at_step = None, None  # traced for, and counted on, another
        super().set_model(model)
        # Keras's own walk of tracked sublayers: the zoo's blocks (CLIP's bottlenecks) are
        # layers that hold their BatchNorms as attributes, which ``model.layers`` does not list.
        self.layers = [
            layer
            for layer in model._flatten_layers(include_self=False)
            if isinstance(layer, keras.layers.BatchNormalization)
        ]

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        if self.layers and self._batches_source() is None:
            raise ValueError(
                "PreciseBatchNorm needs training batches: pass data=<dataset> "
                "(outside a trainkit job)"
            )

    def on_test_begin(self, logs: dict[str, Any] | None = None) -> None:
        layers = [layer for layer in self.layers if layer.trainable]
        if not layers:
            return
        optimizer = getattr(self.model, "optimizer", None)
        step = int(keras.ops.convert_to_numpy(optimizer.iterations)) if optimizer else None
        if step is not None and step == self._at_step:
            return  # no step since: these are the statistics of these weights
        import tensorflow as tf

        strategy = getattr(self.model, "distribute_strategy", None) or tf.distribute.get_strategy()
        if strategy.num_replicas_in_sync > 1:
            if not self._warned:
                warnings.warn(
                    "PreciseBatchNorm does nothing under a strategy with several replicas",
                    stacklevel=2,
                )
                self._warned = True
            return
        source = self._batches_source()
        if source is None:
            return
        seen = self._recompute(layers, _inputs(source, self.num_batches))
        self._at_step = step
        self.recomputed += 1
        log.debug("BatchNorm statistics of %d layers from %d batches", len(layers), seen)

    def _recompute(self, layers: list[Any], inputs: Iterable[Any]) -> int:
        """Set ``layers``' moving mean and variance to the average of their batch statistics
        over ``inputs`` (forward passes in training mode; nothing else changes); returns the
        batches read.

        The i-th batch enters the average through the layer's own update rule, ``moving =
        moving * momentum + batch * (1 - momentum)``, with momentum ``1 - 1/i``: the result is
        the mean of the batches' statistics. The momentum is a variable while this runs, so
        one traced forward pass serves every batch and every later recomputation (Keras reads
        ``layer.momentum`` when it traces, and computes BatchNorm in float32 whatever the
        policy); the layers get their own momentum back after."""
        import tensorflow as tf

        if self._forward is None:
            self._momentum = tf.Variable(0.0, trainable=False, dtype=tf.float32)
            model = self.model
            self._forward = tf.function(lambda x: model(x, training=True), reduce_retracing=True)
        assert self._momentum is not None
        momenta = [layer.momentum for layer in layers]
        seen = 0
        # object.__setattr__: a variable set the usual way would become one of the layer's
        # tracked dependencies (saved with it); this one only lives while this runs.
        try:
            for layer in layers:
                object.__setattr__(layer, "momentum", self._momentum)
            for seen, x in enumerate(inputs, 1):
                self._momentum.assign(1.0 - 1.0 / seen)
                self._forward(x)
        finally:
            for layer, momentum in zip(layers, momenta, strict=True):
                object.__setattr__(layer, "momentum", momentum)
        return seen

    def _batches_source(self) -> Any:
        if self.data is not None:
            return self.data
        return self.context.train_data if self.context is not None else None


def _inputs(source: Any, limit: int) -> Iterable[Any]:
    """The model inputs of the first ``limit`` batches of ``source``."""
    for batch in itertools.islice(source, limit):
        yield keras.utils.unpack_x_y_sample_weight(batch)[0]
