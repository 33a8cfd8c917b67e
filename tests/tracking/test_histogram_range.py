"""TensorBoard histograms of weights whose values are a few float32 ulps apart."""

from __future__ import annotations

import numpy as np

from trainkit.tracking.events import histogram_buckets


def test_values_a_few_ulps_apart_get_their_buckets():
    one = np.float32(1.0)
    values = np.array([one, np.nextafter(one, np.float32(2)), one], dtype=np.float32)
    buckets = histogram_buckets(values, bins=30)
    assert buckets.shape == (30, 3)
    assert buckets[:, 2].sum() == 3
    assert np.all(buckets[:, 0] < buckets[:, 1])
