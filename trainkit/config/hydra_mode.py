"""Compose the config once per ``run.py``, not twice.

Before it runs or sweeps, Hydra 1.3 asks ``Hydra.get_mode`` for ``hydra.mode`` (``RUN`` or
``MULTIRUN``), and ``get_mode`` composes the whole config only to read that key; ``run`` then
composes it again (hydra-ecosystem/hydra#3440, open). Composing trainkit's config takes about a
second of CPU here: every job's start-up, and each of the tests' ``run.py`` processes, paid it
twice.

:func:`compose_once` replaces ``get_mode`` with one that answers ``None`` without composing
when no config that the command line can choose sets ``hydra.mode``: ``None`` is what
``get_mode`` answers then (the key's default), and the ``-m`` flag decides. Otherwise (an
override of ``hydra.mode`` or of a ``hydra/`` group; of a group option whose file, or a file
it chooses, sets ``hydra.mode``, such as ``hparams_search=lr`` or ``experiment=compare``; a
flag that changes where configs come from) Hydra's own ``get_mode`` answers. Which files set
the mode is read from ``conf/`` itself: a new overlay that sets it needs no list kept.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Any

import yaml

# Flags that add or change config sources: Hydra's own get_mode then.
SOURCE_FLAGS = ("--config-dir", "-cd", "--config-path", "-cp", "--config-name", "-cn")
SIMPLE_VALUE = re.compile(r"[\w.-]+")


def _defaults(data: Any) -> Iterable[tuple[str, Any]]:
    """(group, option) of each entry of a config's defaults list."""
    for entry in data.get("defaults", []) if isinstance(data, dict) else []:
        if isinstance(entry, dict):
            for key, option in entry.items():
                group = str(key).removeprefix("override ").strip().lstrip("/").split("@")[0]
                yield group, option
        elif isinstance(entry, str) and "/" in entry:
            group, _, option = entry.lstrip("/").split("@")[0].rpartition("/")
            yield group, option


@cache
def mode_files(conf: Path) -> frozenset[str]:
    """``group/option`` of every config under ``conf`` that sets ``hydra.mode`` or chooses,
    through its defaults list, a config that does (``config`` for the primary one)."""
    configs: dict[str, Any] = {}
    for path in conf.rglob("*.yaml"):
        configs[path.relative_to(conf).with_suffix("").as_posix()] = yaml.safe_load(
            path.read_text(encoding="utf-8")
        )
    found = {
        name
        for name, data in configs.items()
        if isinstance(data, dict) and "mode" in (data.get("hydra") or {})
    }
    while True:
        more = {
            name
            for name, data in configs.items()
            if name not in found
            and any(f"{group}/{option}" in found for group, option in _defaults(data))
        }
        if not more:
            return frozenset(found)
        found |= more


def may_set_mode(conf: Path, overrides: list[str], argv: list[str]) -> bool:
    """True when a config these overrides (and flags) compose may set ``hydra.mode``."""
    if any(arg.split("=")[0] in SOURCE_FLAGS for arg in argv):
        return True
    files = mode_files(conf)
    if "config" in files:
        return True
    groups = {name.rpartition("/")[0] for name in files}
    for override in overrides:
        key, _, value = override.partition("=")
        key = key.lstrip("+~").split("@")[0]
        # hydra.mode itself, or Hydra's own config groups (hydra/launcher=…, hydra/sweeper=…,
        # whose files may come from plugins); hydra.run.dir and the like cannot set the mode
        if key in ("hydra", "hydra.mode") or key.startswith("hydra/"):
            return True
        if key in groups and (not SIMPLE_VALUE.fullmatch(value) or f"{key}/{value}" in files):
            return True
    return False


def compose_once(conf: Path) -> None:
    """Install the ``get_mode`` above for this process (``run.py`` calls it)."""
    from hydra._internal.hydra import Hydra

    original = Hydra.get_mode
    if getattr(original, "trainkit", False):
        return

    def get_mode(self: Hydra, config_name: str | None, overrides: list[str]) -> Any:
        if may_set_mode(conf, list(overrides), sys.argv[1:]):
            return original(self, config_name=config_name, overrides=overrides)
        return None

    get_mode.trainkit = True  # type: ignore[attr-defined]
    Hydra.get_mode = get_mode  # type: ignore[method-assign]
