"""Modules that Keras imports eagerly and a job does not use, loaded at first use instead.

Importing Keras 3 (and so TensorFlow, which imports it) also imports, when they are installed:

* ``keras.wrappers`` (the scikit-learn wrappers), hence scikit-learn, SciPy's statistics and
  pandas' helpers: about 0.8 s;
* ``matplotlib.pyplot``, through ``keras.visualization``'s image gallery: about 0.7 s.

Both are installed here (MLflow depends on them) and neither is used before a job's first
step: together they were a quarter of the TensorFlow import (``benchmarks/startup.py``).
:func:`defer_unused_imports` registers them with :class:`importlib.util.LazyLoader`, the
standard library's lazy import: ``import matplotlib.pyplot`` then binds a module object whose
code runs at the first attribute read. ``keras.wrappers.SKLearnClassifier``, ``plt.figure``
and everything else keep their usual behaviour; they only load later. A job that reads its
data through scikit-learn (the digits) imports scikit-learn there, not during Keras's import.

Call it before TensorFlow or Keras is imported (:func:`trainkit.runtime.quiet_tensorflow`
does; the test suite's ``conftest.py`` too). A name already imported is left alone.
``TRAINKIT_DEFER_IMPORTS=0`` turns it off (everything imports as Keras asks).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
import types
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from typing import Any

ENV = "TRAINKIT_DEFER_IMPORTS"
DEFERRED = (
    "keras.wrappers",
    "keras._tf_keras.keras.wrappers",  # tf.keras.wrappers: the same three classes
    "matplotlib.pyplot",
)


# Read by code that scans every loaded module without using one: TensorFlow's autograph compares
# each module's __file__ with the converted function's at every conversion, and the import
# statement reads __spec__. Served from the module's own attributes, they do not load it.
_METADATA = frozenset(
    {"__name__", "__file__", "__cached__", "__spec__", "__loader__", "__package__"}
)


class _DeferredModule(importlib.util._LazyModule):  # type: ignore[name-defined]
    """The standard library's lazy module, except that its metadata does not load it."""

    def __getattribute__(self, attr: str) -> Any:
        if attr in _METADATA:
            return types.ModuleType.__getattribute__(self, attr)
        return super().__getattribute__(attr)


class _DeferringLoader(importlib.util.LazyLoader):
    def exec_module(self, module: types.ModuleType) -> None:
        super().exec_module(module)
        module.__class__ = _DeferredModule


class _LazyFinder(importlib.abc.MetaPathFinder):
    """Finds the deferred names as the path finder does, with a lazy loader around its loader."""

    def __init__(self, names: set[str]) -> None:
        self.names = names

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: Any = None
    ) -> ModuleSpec | None:
        if fullname not in self.names:
            return None
        self.names.discard(fullname)  # once: a module is imported once
        spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
        if spec is None or spec.loader is None:
            return None
        spec.loader = _DeferringLoader(spec.loader)
        return spec


_finder: _LazyFinder | None = None


def defer_unused_imports(names: Sequence[str] = DEFERRED) -> None:
    """Load ``names`` at their first use rather than when they are imported (idempotent)."""
    global _finder
    if os.environ.get(ENV, "1").strip() == "0":
        return
    wanted = {name for name in names if name not in sys.modules}
    if _finder is None:
        _finder = _LazyFinder(wanted)
        sys.meta_path.insert(0, _finder)
    else:
        _finder.names |= wanted


def is_loaded(name: str) -> bool:
    """Whether ``name``'s code has run (a deferred module that nobody read yet has not)."""
    module = sys.modules.get(name)
    return module is not None and not isinstance(module, importlib.util._LazyModule)  # type: ignore[attr-defined]
