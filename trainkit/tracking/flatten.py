"""Resolved config -> MLflow params: dotted keys, string values within MLflow's limits.

Values that look like secrets are replaced, so a password typed into a config (or a URI with
``user:password@``) never reaches the tracking store.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, TypeVar

# mlflow.utils.validation: MAX_PARAM_VAL_LENGTH, MAX_PARAMS_TAGS_PER_BATCH, MAX_METRICS_PER_BATCH.
MAX_PARAM_VALUE = 6000
MAX_TAG_VALUE = 8000
PARAMS_PER_BATCH = 100
METRICS_PER_BATCH = 1000

REDACTED = "***"
_SECRET_KEY = re.compile(r"(password|passwd|secret|token|api_?key|credential)", re.IGNORECASE)
_URI_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^/@:\s]+):[^/@\s]+@")
_METRIC_KEY_BAD = re.compile(r"[^A-Za-z0-9_\-. /]")

T = TypeVar("T")


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings -> one level with dotted keys; lists stay values."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, prefix=f"{name}."))
        else:
            out[name] = value
    return out


def redact_uri(text: str) -> str:
    """``http://user:pw@host`` -> ``http://user:***@host``."""
    return _URI_USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{REDACTED}@", text)


def as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if value is None or isinstance(value, bool | int | float):
        return str(value)
    try:
        return json.dumps(value, default=str)
    except (TypeError, ValueError):
        return str(value)


def to_params(config: Mapping[str, Any], limit: int = MAX_PARAM_VALUE) -> dict[str, str]:
    """The flattened config as MLflow params: secrets redacted, values cut to ``limit``."""
    params: dict[str, str] = {}
    for key, value in flatten(config).items():
        text = REDACTED if _SECRET_KEY.search(key) else redact_uri(as_text(value))
        params[key] = text[:limit]
    return params


def metric_key(name: str) -> str:
    """MLflow refuses some characters in metric names; class names can contain them."""
    return _METRIC_KEY_BAD.sub("_", name)


def chunks(items: Iterable[T], size: int) -> Iterator[list[T]]:
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
