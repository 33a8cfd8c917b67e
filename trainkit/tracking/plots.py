"""PNG figures for the MLflow run and TensorBoard: training curves, learning rate, confusion matrix.

matplotlib is imported lazily and with the Agg backend: callbacks run in jobs with no display,
and importing pyplot costs a second that a job without plots should not pay.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    _pyplot().close(fig)
    return path


def training_curves(history: Sequence[tuple[int, dict[str, float]]], path: Path) -> Path | None:
    """One panel per metric (``loss``, ``accuracy`` ...), train and ``val_`` curves per epoch."""
    keys = {k for _, logs in history for k in logs}
    # Metrics, not the numbers other callbacks add (lr, step_time ...): those have no val_ twin.
    names = sorted(
        k
        for k in keys
        if not k.startswith("val_") and (f"val_{k}" in keys or k == "loss" or "accuracy" in k)
    )
    if not names:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 3.6), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        for key, label in ((name, "train"), (f"val_{name}", "validation")):
            points = [(e + 1, logs[key]) for e, logs in history if key in logs]
            if points:
                xs, ys = zip(*points, strict=True)
                ax.plot(xs, ys, marker="o", label=label)
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend()
    return _save(fig, path)


def learning_rate(points: Sequence[tuple[int, float]], path: Path) -> Path | None:
    if not points:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    xs, ys = zip(*points, strict=True)
    ax.plot(xs, ys)
    ax.set_title("learning rate")
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def confusion_figure(matrix: np.ndarray, class_names: Sequence[str]) -> Any:
    plt = _pyplot()
    n = matrix.shape[0]
    names = list(class_names) if len(class_names) == n else [str(i) for i in range(n)]
    size = min(2.5 + 0.45 * n, 14)
    fig, ax = plt.subplots(figsize=(size, size))
    # Row-normalised colours, so a rare class is as readable as a frequent one; counts as text.
    rows = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix, rows, out=np.zeros_like(matrix, dtype=float), where=rows > 0)
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), names, rotation=45, ha="right")
    ax.set_yticks(range(n), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if n <= 30:
        for i in range(n):
            for j in range(n):
                color = "white" if share[i, j] > 0.5 else "black"
                ax.text(j, i, str(int(matrix[i, j])), ha="center", va="center", color=color)
    ax.set_title(f"confusion matrix ({int(matrix.sum())} test images)")
    fig.tight_layout()
    return fig


def confusion_matrix(matrix: np.ndarray, class_names: Sequence[str], path: Path) -> Path:
    return _save(confusion_figure(matrix, class_names), path)


def figure_to_array(fig: Any) -> np.ndarray:
    """RGB uint8 (H, W, 3) of a figure, for a TensorBoard image."""
    fig.canvas.draw()
    image = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    _pyplot().close(fig)
    return image


def image_grid(images: np.ndarray, columns: int = 8) -> np.ndarray:
    """A batch (N, H, W, C) in [0, 255] -> one uint8 (rows*H, columns*W, 3) grid image."""
    batch = np.clip(np.asarray(images, dtype=np.float32), 0, 255).astype(np.uint8)
    if batch.ndim == 3:
        batch = batch[..., None]
    if batch.shape[-1] == 1:
        batch = np.repeat(batch, 3, axis=-1)
    batch = batch[..., :3]
    n, h, w, c = batch.shape
    columns = max(1, min(columns, n))
    rows = -(-n // columns)
    grid = np.full((rows * h + rows - 1, columns * w + columns - 1, c), 255, dtype=np.uint8)
    for i in range(n):
        r, col = divmod(i, columns)
        grid[r * (h + 1) : r * (h + 1) + h, col * (w + 1) : col * (w + 1) + w] = batch[i]
    return grid
