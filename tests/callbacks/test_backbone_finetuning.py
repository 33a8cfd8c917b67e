"""BackboneFinetuning: backbone frozen, then unfrozen with the learning rate divided."""

from __future__ import annotations

import numpy as np
import pytest

from callbacks.backbone_finetuning import BackboneFinetuning
from callbacks.lr_schedule import LRSchedule
from tests.callbacks.cb_testing import Recorder, make_model, regression_data, weights_differ


def layer_weights(model, name):
    return [np.array(w) for w in model.get_layer(name).get_weights()]


class LayerWeights(Recorder):
    """Per epoch end: the weights of body, body_bn and head."""

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self.layers = []
        self.initial = {n: layer_weights(self.model, n) for n in ("body", "body_bn", "head")}

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        self.layers.append({n: layer_weights(self.model, n) for n in ("body", "body_bn", "head")})


def test_frozen_then_unfrozen_with_the_lr_divided_also_under_a_schedule():
    x, y = regression_data(32)
    model = make_model(lr=0.05, optimizer="adam", batchnorm=True)
    finetuning = BackboneFinetuning(unfreeze_at_epoch=2, lr_divisor=10, verbose=0)
    recorder = LayerWeights(lr=True)
    # LRSchedule is there to show the division survives a schedule that sets the rate per step
    callbacks = [finetuning, LRSchedule("constant"), recorder]
    model.fit(x, y, batch_size=8, epochs=4, verbose=0, callbacks=callbacks)

    body = [epoch["body"] for epoch in recorder.layers]
    head = [epoch["head"] for epoch in recorder.layers]
    bn = [epoch["body_bn"] for epoch in recorder.layers]
    # epochs 1-2: the backbone (body and its BatchNormalization) does not move, the head does
    for epoch in (0, 1):
        assert not weights_differ(body[epoch], recorder.initial["body"])
        assert not weights_differ(bn[epoch], recorder.initial["body_bn"])
    assert weights_differ(head[0], recorder.initial["head"])
    # epochs 3-4: the backbone trains; BatchNormalization stays frozen (train_batchnorm=False)
    assert weights_differ(body[2], body[1]) and weights_differ(body[3], body[2])
    assert not weights_differ(bn[3], recorder.initial["body_bn"])
    assert [logs["backbone_frozen"] for logs in recorder.epoch_logs] == [1.0, 1.0, 0.0, 0.0]
    # the rate: divided once, at the unfreeze, and kept by the schedule at every step
    assert recorder.epoch_begin_lr == pytest.approx([0.05, 0.05, 0.005, 0.005])
    lrs = [logs["lr"] for _, _, logs in recorder.batch_begin]
    assert lrs == pytest.approx([0.05] * 8 + [0.005] * 8)
    assert finetuning.state_dict() == {"lr_divided": True}


def test_train_batchnorm_and_an_already_frozen_backbone():
    x, y = regression_data(32)
    model = make_model(optimizer="adam", batchnorm=True)
    # frozen before compile-time optimizer build, as the job's model.freeze_backbone does
    model.get_layer("body").trainable = False
    model.get_layer("body_bn").trainable = False
    finetuning = BackboneFinetuning(unfreeze_at_epoch=1, train_batchnorm=True, verbose=0)
    recorder = LayerWeights()
    model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[finetuning, recorder])
    assert not weights_differ(recorder.layers[0]["body"], recorder.initial["body"])
    assert weights_differ(recorder.layers[1]["body"], recorder.layers[0]["body"])
    assert weights_differ(recorder.layers[1]["body_bn"], recorder.layers[0]["body_bn"])


def test_a_model_without_backbone_is_refused():
    import keras

    x, y = regression_data(8)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1, name="head")])
    model.compile("sgd", "mse")
    with pytest.raises(ValueError, match="no backbone"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[BackboneFinetuning()])
