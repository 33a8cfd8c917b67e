"""Every step's metrics under ``steps_per_execution = k``, for the loggers, in one round trip.

Keras 3's TensorFlow trainer runs ``k`` train steps per call of ``train_function`` (a
``tf.while_loop`` in one graph) and returns the last step's logs only; the batch hooks run once
per execution. That is what makes ``k > 1`` fast on a GPU (one host round trip per ``k``
steps), and what used to cost the loggers ``k - 1`` of every ``k`` points.

:class:`StepRows` wraps the model's ``train_step``: after the original step, the step writes its
scalar logs into a ``[k, columns]`` buffer variable at row ``count % k`` (an in-graph
assignment, as Keras's metrics make theirs) and returns the buffer and the step count beside its
logs. The stack (:class:`trainkit.stack.Stack`) takes both out of the logs before any callback
sees them, so callbacks get exactly Keras's logs, and hands the execution's earlier steps to the
callbacks that record per-step rows (:class:`trainkit.context.TakesStepRows`: MLflow,
TensorBoard). Callbacks that act on the model (checkpoints, early stopping, the NaN guard) still
see one hook call per execution: at step ``S`` inside an execution the weights are already
those of its last step, so acting there would be acting on the wrong model.

The columns are the scalar keys of the step's logs (``loss``, ``accuracy`` ...), as the first
trace of the step finds them: Keras builds its compiled metrics in that trace, so they are not
known before it. The buffer is made beforehand (a variable cannot be made in a later trace)
with room for :data:`MAX_COLUMNS` of them. A row holds the metrics' values after that step:
Keras's running means over the epoch, the same numbers the batch hook gets at ``k = 1``.

Installed by the stack at ``on_train_begin`` when ``k > 1`` and a callback takes rows; removed
at ``on_train_end``, so a later plain ``model.fit`` sees Keras's own ``train_step``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from trainkit.train_function import remake_train_function

BLOCK_KEY = "_trainkit_step_block"
COUNT_KEY = "_trainkit_step_count"
# Scalars a step's logs may have; more are left out of the rows (the batch hook still has all).
MAX_COLUMNS = 64


class StepRows:
    """The per-step buffer of one model's train function (see the module's docstring).

    Attributes:
        k: the model's ``steps_per_execution``.
        columns: the names of a row's values, set when the step is traced.
    """

    def __init__(self, model: Any) -> None:
        import tensorflow as tf

        self.model = model
        self.k = int(model.steps_per_execution)
        self.columns: list[str] = []
        # Plain variables, outside the strategy's scope: under a mirrored strategy a mirrored
        # variable's assignment in a replica is a merge_call, which TensorFlow cannot run inside
        # the train function's while loop. Every replica writes the same row (its logs are the
        # synchronised metrics), so the last writer is as good as the first.
        with tf.init_scope():
            self.block = tf.Variable(
                tf.zeros([self.k, MAX_COLUMNS], tf.float32),
                trainable=False,
                name="trainkit_step_block",
            )
            self.count = tf.Variable(
                tf.constant(0, tf.int64), trainable=False, name="trainkit_step_count"
            )
        self._original: Callable[[Any], Any] | None = None

    # -- installing ---------------------------------------------------------------------------

    def install(self) -> None:
        """Wrap the model's ``train_step`` and remake its train function (traced at first call,
        as Keras's own would be)."""
        if self._original is not None:
            return
        self._original = self.model.train_step
        self.model.train_step = self._step
        remake_train_function(self.model)

    def remove(self) -> None:
        """Give the model Keras's ``train_step`` back (the next fit makes a plain function)."""
        if self._original is None:
            return
        try:
            del self.model.train_step  # the instance attribute: the class's method shows again
        except AttributeError:
            self.model.train_step = self._original
        self._original = None
        self.model.train_function = None

    # -- in the graph ---------------------------------------------------------------------------

    def _step(self, data: Any) -> Any:
        import tensorflow as tf

        assert self._original is not None
        logs = self._original(data)
        if not isinstance(logs, dict):
            return logs
        # Trace time: the scalars of this step's logs are the columns.
        columns = [
            key
            for key, value in logs.items()
            if getattr(value, "shape", None) is not None and value.shape.rank == 0
        ][:MAX_COLUMNS]
        self.columns = columns
        values = [tf.cast(logs[key], tf.float32) for key in columns]
        values += [tf.constant(0.0, tf.float32)] * (MAX_COLUMNS - len(values))
        count = self.count.assign_add(1)
        slot = tf.math.floormod(count - 1, self.k)
        self.block.assign(tf.tensor_scatter_nd_update(self.block, [[slot]], [tf.stack(values)]))
        out = dict(logs)
        out[BLOCK_KEY] = self.block.read_value()
        out[COUNT_KEY] = count
        return out

    # -- on the host ----------------------------------------------------------------------------

    def rows(self, block: Any, count: Any, n: int) -> list[dict[str, float]]:
        """The ``n`` steps before the last one of an execution, oldest first, each as
        ``{column: value}``; ``count`` is the step count the execution ended at."""
        values = np.asarray(block)
        last = int(count) - 1
        names = self.columns
        width = len(names)
        return [
            dict(zip(names, values[(last - back) % self.k, :width].tolist(), strict=True))
            for back in range(n, 0, -1)
        ]
