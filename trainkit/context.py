"""The one object the job hands to every callback that wants to know about the run.

Callbacks receive it through ``set_context(ctx)`` right after Hydra instantiates them and before
``fit``. Plain Keras callbacks, which have no such method, are left alone. Nothing here is global:
two jobs in one process (a Hydra multirun) each get their own context.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class RunContext:
    """What a callback may need to know about the job it runs in.

    Attributes:
        run_dir: Hydra's run directory; callbacks write their files under it.
        config: the fully resolved job config as a plain dict (for params and artifacts).
        model_name: the registry name of the model (``alexnet``, ``clip_resnet50`` ...).
        stack: the name of the callback stack (``full``, ``default`` ...), or ``custom``.
        class_names: names of the dataset's classes, index = label.
        image_size: the (height, width) the model sees.
        batch_size: the training batch size.
        tracking: the ``tracking`` config group (uri, experiment, ...) as a dict.
        test_data: the test split as a ``tf.data.Dataset`` of (images, labels), if any.
        sample_images: a small batch of augmented training images (uint8-range floats).
        extras: anything else a job wants to share; callbacks must not rely on keys here.
    """

    run_dir: Path
    config: dict[str, Any] = field(default_factory=dict)
    model_name: str = "model"
    stack: str = "custom"
    class_names: list[str] = field(default_factory=list)
    image_size: tuple[int, int] | None = None
    batch_size: int | None = None
    tracking: dict[str, Any] = field(default_factory=dict)
    test_data: Any = None
    sample_images: Any = None
    extras: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.run_dir = Path(self.run_dir)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def path(self, *parts: str) -> Path:
        """A path under the run directory, its parent folder created."""
        target = self.run_dir.joinpath(*parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        return target
