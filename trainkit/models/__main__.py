"""``python -m trainkit.models [NAME ...]``: the model zoo as a table.

Builds every model (or the ones named) at 1000 classes and its native input, with its default
options (GoogLeNet with its auxiliary heads), to count its parameters: about half a minute and a
few GB of memory for the whole zoo. "all params" adds BatchNorm's moving statistics.
"""

from __future__ import annotations

import argparse
import math
import os
import sys


def count(weights) -> int:
    return sum(math.prod(w.shape) for w in weights)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainkit.models", description=__doc__)
    parser.add_argument("names", nargs="*", help="models to list (default: all)")
    parser.add_argument(
        "--no-params", action="store_true", help="skip building the models to count parameters"
    )
    parser.add_argument("-d", "--describe", action="store_true", help="add a description column")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    import keras
    from rich.console import Console
    from rich.table import Table

    from trainkit.errors import TrainkitError
    from trainkit.models import available_models, build_model, get_spec

    console = Console(width=140) if not sys.stdout.isatty() else Console()
    try:
        specs = [get_spec(name) for name in (args.names or available_models())]
    except TrainkitError as exc:
        console.print(f"[red]{exc}[/red]")
        return 2
    table = Table(title="trainkit model zoo")
    for column, justify in (
        ("name", "left"),
        ("native input", "right"),
        ("min input", "right"),
        ("trainable params", "right"),
        ("all params", "right"),
        ("preprocessing", "left"),
        ("imagenet weights", "center"),
    ):
        table.add_column(column, justify=justify, no_wrap=True)
    if args.describe:
        table.add_column("description")
    with console.status("building models to count their parameters") as status:
        for spec in specs:
            trainable = total = "-"
            if not args.no_params:
                status.update(f"building {spec.name}")
                model = build_model(spec.name, 1000)
                trainable = f"{count(model.trainable_weights):,}"
                total = f"{count(model.weights):,}"
                del model
                keras.backend.clear_session()
            row = [
                spec.name,
                f"{spec.native_size}x{spec.native_size}",
                f"{spec.min_size}x{spec.min_size}",
                trainable,
                total,
                spec.preprocessing,
                "yes" if spec.imagenet_weights else "no",
            ]
            table.add_row(*row, *([spec.description] if args.describe else []))
    console.print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
