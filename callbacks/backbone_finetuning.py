"""Lightning-style backbone fine-tuning: a frozen backbone first, then all of it at a lower LR."""

from __future__ import annotations

from typing import Any

import keras

from trainkit.models.registry import backbone_layers
from trainkit.train_function import remake_train_function


class BackboneFinetuning(keras.callbacks.Callback):
    """Trains only the head for ``unfreeze_at_epoch`` epochs, then the whole model with the
    learning rate divided by ``lr_divisor``.

    The backbone is ``trainkit.models.backbone_layers(model)``: every top-level layer with
    weights that is not a head layer (``predictions`` or ``head*``).

    Learning rate: Keras has one learning rate per optimizer, so at the unfreeze epoch the
    rate of the whole model (head included) is divided by ``lr_divisor``, once; Lightning's
    separate, smaller rate for the backbone would need a custom ``train_step`` scaling the
    backbone's gradients. An ``LRSchedule`` in the stack keeps the division as a factor on the
    rest of its schedule (it is noticed at the first batch of the epoch), so the two combine.

    Keras 3 reads ``trainable`` when it traces the train function, so after every change the
    callback rebuilds it (``model.make_train_function(force=True)``); without that, unfreezing
    has no effect. The optimizer must know the backbone's variables before the first freeze:
    at ``on_train_begin`` it builds the optimizer over all the model's weights (backbone
    unfrozen for the moment) if it is not built yet. An optimizer already built over the head
    only cannot train the backbone (Keras raises "Unknown variable"): compile afresh.

    BatchNormalization layers inside the backbone stay frozen (inference mode) after the
    unfreeze unless ``train_batchnorm``: with small fine-tuning batches their statistics would
    drift (Keras's transfer-learning guide). Nested models are searched through ``.layers``.

    Freezing and unfreezing happen in ``on_epoch_begin`` from the epoch number, so a resumed
    run (``callbacks.backup.Backup``) or ``initial_epoch`` gets the right state; the division
    is recorded in ``state_dict()`` so a resume does not divide twice. Epoch logs:
    ``backbone_frozen`` (1.0 or 0.0).

    Hooks: ``on_train_begin``, ``on_epoch_begin``, ``on_epoch_end``.

    Args:
        unfreeze_at_epoch: the first epoch (0-based) in which the backbone trains.
        lr_divisor: the learning rate is divided by it at the unfreeze.
        train_batchnorm: let the backbone's BatchNormalization layers train after unfreezing.
        verbose: 1 prints a line at the freeze and the unfreeze.

    Example::

        BackboneFinetuning(unfreeze_at_epoch=5, lr_divisor=10)
        # or: python run.py experiment=finetune
    """

    def __init__(
        self,
        unfreeze_at_epoch: int = 10,
        lr_divisor: float = 10.0,
        train_batchnorm: bool = False,
        verbose: int = 1,
    ) -> None:
        super().__init__()
        if lr_divisor <= 0:
            raise ValueError(f"lr_divisor must be positive, got {lr_divisor}")
        self.unfreeze_at_epoch = int(unfreeze_at_epoch)
        self.lr_divisor = float(lr_divisor)
        self.train_batchnorm = train_batchnorm
        self.verbose = verbose
        self.frozen = False
        self.lr_divided = False

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self.frozen = False
        self.lr_divided = False
        self._backbone = backbone_layers(self.model)
        if not self._backbone:
            raise ValueError("BackboneFinetuning: the model has no backbone layers")
        optimizer = self.model.optimizer
        if not isinstance(optimizer.learning_rate, keras.Variable):
            raise TypeError("BackboneFinetuning needs an optimizer with a plain learning rate")
        if not optimizer.built:
            self._set_trainable(True)
            optimizer.build(self.model.trainable_variables)

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if epoch < self.unfreeze_at_epoch:
            if not self.frozen:
                self._set_trainable(False)
                self.frozen = True
                self._say(f"epoch {epoch + 1}: backbone frozen ({len(self._backbone)} layers)")
            return
        if self.frozen or not all(layer.trainable for layer in self._backbone):
            self._set_trainable(True)
            self.frozen = False
            self._say(f"epoch {epoch + 1}: backbone unfrozen")
        if not self.lr_divided:
            variable = self.model.optimizer.learning_rate
            old = float(variable.numpy())
            variable.assign(old / self.lr_divisor)
            self.lr_divided = True
            self._say(f"learning rate {old:.3g} -> {old / self.lr_divisor:.3g}")

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if logs is not None:
            logs["backbone_frozen"] = 1.0 if self.frozen else 0.0

    def _set_trainable(self, trainable: bool) -> None:
        for layer in self._backbone:
            layer.trainable = trainable
            if trainable and not self.train_batchnorm:
                for sublayer in _all_sublayers(layer):
                    if isinstance(sublayer, keras.layers.BatchNormalization):
                        sublayer.trainable = False
        # The traced train function captured the old trainable variables.
        remake_train_function(self.model)

    def _say(self, message: str) -> None:
        if self.verbose:
            print(f"BackboneFinetuning: {message}")

    # -- resume support (callbacks.backup.Backup) ---------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {"lr_divided": self.lr_divided}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.lr_divided = bool(state.get("lr_divided", False))


def _all_sublayers(layer: keras.layers.Layer) -> list[keras.layers.Layer]:
    found = [layer]
    for sublayer in getattr(layer, "layers", None) or []:
        found.extend(_all_sublayers(sublayer))
    return found
