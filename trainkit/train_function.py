"""Making a model's train function again after a change to what its train step traces.

Keras traces ``model.train_function`` at its first call and keeps it: a change made after that
to ``model.train_step`` (:mod:`trainkit.step_rows`) or to the optimizer's ``apply``
(:class:`callbacks.lr_schedule.InGraphRate`) reaches the graph only through a new function.
"""

from __future__ import annotations

from typing import Any

# Set on a stand-in train function that does not train (a resumed epoch's steps already done,
# :func:`callbacks.backup.resume_within_epoch`): it makes the real one when it hands over.
PLACEHOLDER = "trainkit_placeholder"


def remake_train_function(model: Any) -> None:
    """Have the model's train step traced again at the next call (tracing is lazy: a function
    not called yet costs nothing to remake). A placeholder is kept: it makes its own."""
    if getattr(model.train_function, PLACEHOLDER, False):
        return
    model.make_train_function(force=True)
