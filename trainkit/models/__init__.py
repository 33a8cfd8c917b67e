"""The model zoo. ``build_model(name, num_classes, ...)`` builds any registered architecture.

Importing this package registers every family; ``python -m trainkit.models`` lists them.
"""

# Importing a family module registers its models.
from trainkit.models import (  # noqa: F401
    alexnet,
    applications,
    clip_resnet,
    inception_v1,
    inception_v3,
    inception_v4,
)
from trainkit.models.registry import (
    ModelSpec,
    available_models,
    backbone_layers,
    build_model,
    get_spec,
    head_layers,
    is_head_layer,
    resolve_input_shape,
)

__all__ = [
    "ModelSpec",
    "available_models",
    "backbone_layers",
    "build_model",
    "get_spec",
    "head_layers",
    "is_head_layer",
    "resolve_input_shape",
]
