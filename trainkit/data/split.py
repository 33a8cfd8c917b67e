"""Stratified train / validation / test split, with ``data.limit`` applied before it."""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import train_test_split

from trainkit.errors import ConfigError


def _split(indices: np.ndarray, labels: np.ndarray, size: int | float, seed: int):
    """Stratified when every class can be represented; a plain random split otherwise."""
    try:
        return train_test_split(
            indices, test_size=size, random_state=seed, stratify=labels[indices]
        )
    except ValueError:
        return train_test_split(indices, test_size=size, random_state=seed)


def split_indices(
    labels: np.ndarray,
    val_split: float,
    test_split: float,
    limit: int | None = None,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Index arrays for ``train``, ``val`` and ``test``.

    ``limit`` caps the training split: the whole set is first subsampled (stratified) to
    about ``limit / (1 - val_split - test_split)`` examples, so validation and test shrink in
    proportion and a small ``limit`` makes the whole job small.
    """
    if not (0 < val_split < 1 and 0 < test_split < 1 and val_split + test_split < 1):
        raise ConfigError(
            f"data.val_split={val_split} and data.test_split={test_split} must each lie in "
            "(0, 1) and sum to less than 1"
        )
    indices = np.arange(len(labels))
    n_test: int | float = test_split
    n_val: int | float = val_split / (1.0 - test_split)
    if limit is not None:
        if limit < 1:
            raise ConfigError(f"data.limit must be a positive number of examples, got {limit}")
        train_fraction = 1.0 - val_split - test_split
        n_val = max(1, round(limit * val_split / train_fraction))
        n_test = max(1, round(limit * test_split / train_fraction))
        total = limit + n_val + n_test
        if total < len(indices):
            indices, _ = _split(indices, labels, len(indices) - total, seed)
        else:  # fewer examples than asked for: keep the fractions
            n_test, n_val = test_split, val_split / (1.0 - test_split)
    rest, test = _split(indices, labels, n_test, seed)
    train, val = _split(rest, labels, n_val, seed)
    for name, part in (("train", train), ("val", val), ("test", test)):
        if len(part) == 0:
            raise ConfigError(
                f"the {name} split is empty: raise data.limit (now {limit}) or the split fractions"
            )
    return {"train": np.sort(train), "val": np.sort(val), "test": np.sort(test)}
