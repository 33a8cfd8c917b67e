"""The model zoo. ``build_model(name, num_classes, ...)`` builds any registered architecture.

Importing this package registers every family; ``python -m trainkit.models`` lists them.
"""

from trainkit.models import alexnet  # noqa: F401  (registers)
from trainkit.models.registry import (
    ModelSpec,
    available_models,
    backbone_layers,
    build_model,
    get_spec,
    head_layers,
    resolve_input_shape,
)

__all__ = [
    "ModelSpec",
    "available_models",
    "backbone_layers",
    "build_model",
    "get_spec",
    "head_layers",
    "resolve_input_shape",
]
