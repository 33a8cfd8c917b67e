"""Keras's ReduceLROnPlateau, also logging the rate as ``lr``, and resumable."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from callbacks.early_stopping import is_improvement


class ReduceLROnPlateau(keras.callbacks.ReduceLROnPlateau):
    """Multiplies the learning rate by ``factor`` when ``monitor`` has not improved for
    ``patience`` epochs: ``keras.callbacks.ReduceLROnPlateau``, its options, defaults and
    attributes unchanged.

    Additions: the epoch logs carry the rate also as ``lr`` (trainkit's key, beside Keras's
    ``learning_rate``), the rate after a reduction is the attribute ``current_lr``, a metric of
    several values (an F1 score per class), on which Keras's comparison raises, compares by its
    mean, and the counters can be saved and restored by ``callbacks.backup.Backup``.

    It can be combined with ``LRSchedule``: a reduction becomes a factor on the rest of the
    schedule (see ``LRSchedule``). Put it after the loggers that write ``monitor``.

    Hooks: ``on_train_begin``, ``on_epoch_end``.

    Args:
        monitor, factor, patience, verbose, mode, min_delta, cooldown, min_lr: as in
            ``keras.callbacks.ReduceLROnPlateau``.

    Example::

        ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=3, min_lr=1e-6)
        # conf/callbacks/<stack>.yaml:
        #   reduce_lr_on_plateau: {_target_: callbacks.reduce_lr_on_plateau.ReduceLROnPlateau,
        #                          factor: 0.5, patience: 3}
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        factor: float = 0.1,
        patience: int = 10,
        verbose: int = 0,
        mode: str = "auto",
        min_delta: float = 1e-4,
        cooldown: int = 0,
        min_lr: float = 0.0,
    ) -> None:
        super().__init__(
            monitor=monitor,
            factor=factor,
            patience=patience,
            verbose=verbose,
            mode=mode,
            min_delta=min_delta,
            cooldown=cooldown,
            min_lr=min_lr,
        )
        self.current_lr: float | None = None

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = logs if logs is not None else {}
        super().on_epoch_end(epoch, logs)
        if "learning_rate" in logs:
            logs["lr"] = logs["learning_rate"]
        self.current_lr = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))

    def _is_improvement(self, monitor_value: Any, reference_value: Any) -> bool:
        return is_improvement(self, monitor_value, reference_value)

    # -- resume support (callbacks.backup.Backup) ---------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        best = None if self.best is None else np.asarray(self.best).tolist()
        return {"wait": self.wait, "cooldown_counter": self.cooldown_counter, "best": best}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.wait = int(state.get("wait", 0))
        self.cooldown_counter = int(state.get("cooldown_counter", 0))
        best = state.get("best")
        self.best = np.asarray(best) if isinstance(best, list) else best
