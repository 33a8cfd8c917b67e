"""fastai's learning-rate finder: an exponential LR ramp, a loss curve and a suggested rate."""

from __future__ import annotations

import json
import math
from typing import Any

import keras
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from callbacks.base import TrainkitCallback

SUGGESTIONS = ("valley", "steep", "minimum")


class LRFinder(TrainkitCallback):
    """Runs a learning-rate range test inside ``fit``, then puts the model back as it was.

    For ``num_steps`` training steps the rate grows exponentially from ``start_lr`` to
    ``end_lr`` and the loss of each step is recorded and smoothed (debiased exponential moving
    average, ``beta``). The test ends early when the smoothed loss exceeds ``diverge_factor``
    times its best value or is not finite. Then the weights and the optimizer state (slots,
    iteration count, learning rate) taken at ``on_train_begin`` are restored and, with
    ``stop_training`` (default), ``fit`` stops: a run with this callback is an LR search, not a
    training run. Give ``fit`` enough epochs to hold ``num_steps`` steps.

    The suggestion (``suggestion`` option; all three are computed and saved):

    * ``valley`` (default, fastai's default since 2.5): the longest stretch over which the
      smoothed loss keeps falling; the rate two thirds of the way down it. Robust to a noisy
      curve.
    * ``steep``: where the smoothed loss falls fastest per log-step of the rate.
    * ``minimum``: the rate of the lowest smoothed loss, divided by 10.

    As in fastai, the first tenth of the points and the last five are left out before picking.

    Each step's loss is read from the batch logs; Keras reports the epoch's running mean there,
    so the callback resets the model's metrics before each step to get the step's own loss.
    Use ``steps_per_execution = 1``: with more, each point averages a whole execution.

    Writes ``lr_finder.json`` (rates, raw and smoothed losses, the three suggestions, why it
    stopped) and ``lr_finder.png`` (loss against rate, log scale, suggestion marked) to the
    run directory, prints the suggestion, sets the attributes ``suggested_lr``,
    ``suggestions``, ``lrs``, ``losses``, and adds ``lr_find_suggestion`` to the logs of the
    epoch in which it finished. With ``apply_suggestion`` the optimizer's rate is set to the
    suggestion after the restore (useful when ``stop_training`` is False or for a later fit).

    Hooks: ``on_train_begin``, ``on_train_batch_begin``, ``on_train_batch_end``,
    ``on_epoch_end``, ``on_train_end``.

    Example::

        finder = LRFinder(num_steps=100)
        model.fit(train, epochs=100, callbacks=[finder], verbose=0)
        print(finder.suggested_lr)
        # or: python run.py experiment=lr_find
    """

    def __init__(
        self,
        start_lr: float = 1e-7,
        end_lr: float = 10.0,
        num_steps: int = 100,
        beta: float = 0.98,
        diverge_factor: float = 4.0,
        suggestion: str = "valley",
        stop_training: bool = True,
        apply_suggestion: bool = False,
        verbose: int = 1,
    ) -> None:
        super().__init__()
        if suggestion not in SUGGESTIONS:
            raise ValueError(f"suggestion must be one of {', '.join(SUGGESTIONS)}")
        if not 0 < start_lr < end_lr:
            raise ValueError("need 0 < start_lr < end_lr")
        if num_steps < 2:
            raise ValueError("num_steps must be at least 2")
        self.start_lr = float(start_lr)
        self.end_lr = float(end_lr)
        self.num_steps = int(num_steps)
        self.beta = float(beta)
        self.diverge_factor = float(diverge_factor)
        self.suggestion = suggestion
        self.stop_training = stop_training
        self.apply_suggestion = apply_suggestion
        self.verbose = verbose
        self._reset()

    def _reset(self) -> None:
        self.lrs: list[float] = []
        self.raw_losses: list[float] = []
        self.losses: list[float] = []
        self.suggested_lr: float | None = None
        self.suggestions: dict[str, float | None] = {}
        self.stop_cause: str | None = None
        self._avg = 0.0
        self._best = math.inf
        self._done = False
        self._report_in_epoch_logs = False

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._reset()
        optimizer = self.model.optimizer
        if not isinstance(optimizer.learning_rate, keras.Variable):
            raise TypeError("LRFinder needs an optimizer with a plain learning rate")
        if not optimizer.built:
            # Slots must exist now so that the snapshot covers the whole optimizer state.
            optimizer.build(self.model.trainable_variables)
        self._weights = self.model.get_weights()
        self._optimizer_state = [v.numpy() for v in optimizer.variables]
        steps, epochs = self.params.get("steps"), self.params.get("epochs")
        if steps and epochs and steps * epochs < self.num_steps:
            print(
                f"LRFinder: fit has only {steps * epochs} steps for a {self.num_steps}-step "
                "test; give it more epochs"
            )

    def on_train_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        if self._done:
            return
        position = len(self.lrs) / (self.num_steps - 1)
        lr = self.start_lr * (self.end_lr / self.start_lr) ** position
        self.model.optimizer.learning_rate.assign(lr)
        self.lrs.append(lr)
        self.model.reset_metrics()

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        if self._done:
            return
        loss = float((logs or {}).get("loss", math.nan))
        self.raw_losses.append(loss)
        self._avg = self.beta * self._avg + (1 - self.beta) * loss
        smoothed = self._avg / (1 - self.beta ** len(self.raw_losses))
        self.losses.append(smoothed)
        if not math.isfinite(smoothed):
            self._finish("non_finite")
        elif smoothed > self.diverge_factor * self._best:
            self._finish("diverged")
        elif len(self.lrs) >= self.num_steps:
            self._finish("num_steps")
        else:
            self._best = min(self._best, smoothed)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if self._report_in_epoch_logs and logs is not None and self.suggested_lr is not None:
            logs["lr_find_suggestion"] = self.suggested_lr
        self._report_in_epoch_logs = False

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        if not self._done:
            self._finish("out_of_steps")

    def _finish(self, cause: str) -> None:
        self._done = True
        self._report_in_epoch_logs = True
        self.stop_cause = cause
        self.model.set_weights(self._weights)
        for variable, value in zip(
            self.model.optimizer.variables, self._optimizer_state, strict=True
        ):
            variable.assign(value)
        if self.stop_training:
            self.model.stop_training = True
        self.suggestions = suggest(self.lrs, self.losses)
        self.suggested_lr = self.suggestions.get(self.suggestion)
        if self.apply_suggestion and self.suggested_lr is not None:
            self.model.optimizer.learning_rate.assign(self.suggested_lr)
        self._save()
        if self.verbose:
            shown = ", ".join(f"{name} {_fmt(value)}" for name, value in self.suggestions.items())
            print(
                f"LRFinder: {len(self.lrs)} steps ({cause}); suggested lr "
                f"{_fmt(self.suggested_lr)} ({self.suggestion}); all: {shown}"
            )

    def _save(self) -> None:
        record = {
            "suggested_lr": self.suggested_lr,
            "method": self.suggestion,
            "suggestions": self.suggestions,
            "stop_cause": self.stop_cause,
            "lrs": self.lrs,
            "losses": _finite_or_none(self.losses),
            "raw_losses": _finite_or_none(self.raw_losses),
        }
        self.run_path("lr_finder.json").write_text(json.dumps(record, indent=2))
        figure = Figure(figsize=(6, 4))
        FigureCanvasAgg(figure)
        axes = figure.add_subplot()
        lrs, losses = np.asarray(self.lrs[: len(self.losses)]), np.asarray(self.losses)
        axes.plot(lrs, losses, label="smoothed loss")
        for color, (name, value) in enumerate(self.suggestions.items(), start=1):
            if value is not None:
                style = "--" if name == self.suggestion else ":"
                axes.axvline(value, color=f"C{color}", linestyle=style, label=f"{name} {value:.2g}")
        axes.set_xscale("log")
        axes.set_xlabel("learning rate")
        axes.set_ylabel("loss")
        finite = losses[np.isfinite(losses)]
        if finite.size:
            # The diverging tail would flatten the part of the curve that matters.
            axes.set_ylim(finite.min() - 0.05 * abs(finite.min()), finite[0] * 1.5 + 1e-12)
        axes.legend()
        figure.tight_layout()
        figure.savefig(self.run_path("lr_finder.png"), dpi=100)


def suggest(lrs: list[float], losses: list[float]) -> dict[str, float | None]:
    """The ``valley``, ``steep`` and ``minimum`` suggestions for a smoothed loss curve."""
    count = min(len(lrs), len(losses))
    lr = np.asarray(lrs[:count], dtype=np.float64)
    loss = np.asarray(losses[:count], dtype=np.float64)
    finite = np.isfinite(loss)
    lr, loss = lr[finite], loss[finite]
    skip_start, skip_end = count // 10, 5
    if len(loss) - skip_start - skip_end >= 3:
        lr, loss = lr[skip_start : len(lr) - skip_end], loss[skip_start : len(loss) - skip_end]
    if len(loss) < 3:
        return dict.fromkeys(SUGGESTIONS)
    slopes = np.diff(loss) / np.diff(np.log(lr))
    return {
        "valley": float(lr[_valley_index(loss)]),
        "steep": float(lr[int(np.argmin(slopes))]),
        "minimum": float(lr[int(np.argmin(loss))] / 10),
    }


def _valley_index(losses: np.ndarray) -> int:
    """fastai's ``valley``: the longest decreasing subsequence, two thirds along it."""
    n = len(losses)
    lengths = [1] * n
    max_start = max_end = 0
    for i in range(1, n):
        for j in range(i):
            if losses[i] < losses[j] and lengths[i] < lengths[j] + 1:
                lengths[i] = lengths[j] + 1
            if lengths[max_end] < lengths[i]:
                max_end = i
                max_start = max_end - lengths[max_end]
    sections = (max_end - max_start) / 3
    return min(max(max_start + int(sections) + int(sections / 2), 0), n - 1)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3g}"


def _finite_or_none(values: list[float]) -> list[float | None]:
    return [v if math.isfinite(v) else None for v in values]
