"""Keras's ``.keras`` save, at the cost Keras meant it to have.

Keras 3 (up to 3.15 at least) walks a model's attributes when it saves, skipping those every
``Layer``, ``Optimizer``, ``Metric`` ... has. ``keras.src.saving.saving_lib.get_attr_skipset``
computes each skip set by building a bare object of the kind (an ``Optimizer(1.0)`` creates
variables) and caches it in Keras's global state, but it stores the set under
``saving_attr_skipset_<kind>`` and looks it up under ``saving_attr_skiplist_<kind>``: the cache
never hits, and every save builds those objects again. For the fast-step MLP that is half the
CPU of a checkpoint save (13.6 ms without this fix, 6.8 ms with it; ``docs/benchmarks.md``),
work that a checkpoint's writer thread does beside training, holding the GIL.

:func:`prime_attr_skipsets` stores the sets under the name Keras reads. The sets are Keras's
own (its function computes them), so a saved file does not change. Keras's global state is
per thread (a checkpoint is written on its writer's) and ``keras.backend.clear_session()``
clears it: the savers call this before each save, where it costs one lookup once primed. A
Keras that reads the name it writes needs none of this: the lookup then finds the set there.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

# The kinds a model's save reaches (get_attr_skipset also knows feature-space layers).
_KINDS = ("Operation", "Layer", "Functional", "Sequential", "Metric", "Optimizer", "Loss")
_READ_AS = "saving_attr_skiplist_{}"


def prime_attr_skipsets() -> None:
    """Make Keras's cache of attribute skip sets hit (see the module docstring)."""
    try:
        from keras.src.backend.common import global_state
        from keras.src.saving import saving_lib
    except ImportError:  # a Keras laid out otherwise: its saves cost what they cost
        return
    get, put = global_state.get_global_attribute, global_state.set_global_attribute
    if get(_READ_AS.format(_KINDS[-1])) is not None:
        return
    try:
        for kind in _KINDS:
            if get(_READ_AS.format(kind)) is None:
                put(_READ_AS.format(kind), saving_lib.get_attr_skipset(kind))
    except Exception as exc:  # noqa: BLE001 - an optimisation: never the reason a save fails
        log.debug("Keras's save skip sets left unprimed: %s: %s", type(exc).__name__, exc)
