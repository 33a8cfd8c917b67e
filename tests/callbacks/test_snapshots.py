"""read_variables: a snapshot that later steps do not change, eager reads or one traced call."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from callbacks.base import TRACED_READ_FROM, read_variables, to_numpy


@pytest.mark.parametrize("layers", [1, TRACED_READ_FROM])  # eager reads, then the traced call
def test_a_snapshot_keeps_its_values_while_training_moves_the_weights(layers):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,))] + [keras.layers.Dense(4) for _ in range(layers)])
    model.compile(keras.optimizers.Adam(0.1), "mse")
    x, y = np.ones((16, 4), "float32"), np.zeros((16, 4), "float32")
    model.fit(x, y, epochs=1, verbose=0)
    variables = list(model.variables) + list(model.optimizer.variables)
    assert (len(variables) >= TRACED_READ_FROM) == (layers == TRACED_READ_FROM)

    snapshot = read_variables(variables)
    taken = [np.array(v.numpy()) for v in variables]
    model.fit(x, y, epochs=2, verbose=0)  # the optimizer writes every variable in place

    assert all(np.array_equal(a, b) for a, b in zip(to_numpy(snapshot), taken, strict=True))
    moved = [not np.array_equal(a, v.numpy()) for a, v in zip(taken, variables, strict=True)]
    assert sum(moved) >= 2 * layers  # kernels and biases, besides the optimizer's slots
    # a second read of the same list gives the current values
    assert all(
        np.array_equal(a, v.numpy())
        for a, v in zip(to_numpy(read_variables(variables)), variables, strict=True)
    )
