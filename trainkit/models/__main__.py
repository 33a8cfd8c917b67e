"""``python -m trainkit.models [NAME ...]``: the model zoo as a table.

``python -m trainkit.models`` lists every model (native and minimum input, preprocessing,
ImageNet weights) from the registry, without building any: a few seconds, most of them
importing TensorFlow. Naming models (``python -m trainkit.models alexnet vgg16``) or passing
``--params`` also builds them at 1000 classes and their native input, with their default
options (GoogLeNet with its auxiliary heads), to count their parameters: about half a minute
and a few GB of memory for the whole zoo. "all params" adds BatchNorm's moving statistics.
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
        "--params",
        action="store_true",
        help="build the models to count their parameters (the default for named models)",
    )
    parser.add_argument(
        "--no-params", action="store_true", help="never build the models (the default for all)"
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
    count_params = (args.params or bool(args.names)) and not args.no_params
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
        if column.endswith("params") and not count_params:
            continue
        table.add_column(column, justify=justify, no_wrap=True)
    if args.describe:
        table.add_column("description")
    status_text = "building models to count their parameters" if count_params else "listing"
    with console.status(status_text) as status:
        for spec in specs:
            trainable = total = "-"
            if count_params:
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
                *([trainable, total] if count_params else []),
                spec.preprocessing,
                "yes" if spec.imagenet_weights else "no",
            ]
            table.add_row(*row, *([spec.description] if args.describe else []))
    console.print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
