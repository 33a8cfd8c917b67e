"""The event-writing helpers shared by the TensorBoard callback."""

from __future__ import annotations

import numpy as np
import pytest

from trainkit.tracking.events import histogram_buckets


def test_histogram_buckets_match_numpy_and_count_every_weight() -> None:
    values = np.random.default_rng(0).normal(size=(300, 7)).astype(np.float32)
    buckets = histogram_buckets(values, bins=30)
    assert buckets.shape == (30, 3)
    assert buckets[:, 2].sum() == values.size
    assert buckets[0, 0] == pytest.approx(values.min()) and buckets[-1, 1] == pytest.approx(
        values.max()
    )
    np.testing.assert_array_equal(buckets[:-1, 1], buckets[1:, 0])  # contiguous edges
    constant = histogram_buckets(np.zeros(5))
    assert constant.tolist() == [[-0.5, 0.5, 5.0]]
