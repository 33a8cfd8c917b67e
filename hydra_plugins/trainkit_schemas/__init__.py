"""Registers trainkit's callback schemas before Hydra composes any config.

Hydra imports every module of the ``hydra_plugins`` namespace package when it first looks for
plugins, which happens before any composition: ``run.py``, the compose API in tests and
benchmarks alike. Importing this module stores the schemas of
:mod:`trainkit.config.callbacks` in the ConfigStore (``callbacks/schema/<entry>``), so the entry
files of ``conf/callbacks/entry/`` can extend them wherever Hydra runs, and those of
:mod:`trainkit.config.schema` (``tracking_schema``, ...).
"""

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin

from trainkit.config import callbacks, schema

callbacks.register()
schema.register()  # the typed groups too, so every composition finds them


class TrainkitSchemas(SearchPathPlugin):
    """A plugin only so that Hydra finds and imports this module; the search path is kept."""

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        return None
