"""A model's summary as plain text at its full width, for the ``model_summary.txt`` artifact.

Keras's ``model.summary(print_fn=...)`` renders its table with Rich at the terminal's width (80
columns when the output is not a terminal, whatever ``line_length`` asks): the ``Param #``
column is cut off. This writes the same facts (each layer with its type, output shape and
parameter count, then the totals) as a plain table as wide as its contents.
"""

from __future__ import annotations

import math
from typing import Any


def _shape(layer: Any) -> str:
    try:
        shape = layer.output.shape
    except (AttributeError, ValueError, RuntimeError):
        return "?"
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + ")"


def _count(weights: Any) -> int:
    return int(sum(math.prod(w.shape) for w in weights))


def model_summary(model: Any) -> str:
    """The summary of a built ``model`` as plain text lines, no line cut."""
    rows = [("Layer (type)", "Output Shape", "Param #")]
    for layer in model.layers:
        rows.append(
            (f"{layer.name} ({type(layer).__name__})", _shape(layer), f"{layer.count_params():,}")
        )
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    rule = "-" * (sum(widths) + 6)

    def line(row: tuple[str, str, str]) -> str:
        return f"{row[0]:<{widths[0]}}   {row[1]:<{widths[1]}}   {row[2]:>{widths[2]}}"

    trainable = _count(model.trainable_weights)
    total = _count(model.weights)
    out = [f'Model: "{model.name}"', rule, line(rows[0]), rule]
    out += [line(row) for row in rows[1:]]
    out += [
        rule,
        f"Total params: {total:,}",
        f"Trainable params: {trainable:,}",
        f"Non-trainable params: {total - trainable:,}",
    ]
    return "\n".join(out) + "\n"
