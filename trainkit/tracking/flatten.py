"""Resolved config -> MLflow params: dotted keys, string values within MLflow's limits.

Values that look like secrets are replaced, so a password typed into a config (or a URI with
``user:password@``) never reaches the tracking store. :func:`is_secret_key` and
:func:`redact_config` are what every writer uses (MLflow params and the config artifact,
TensorBoard's HParams, the hook log): a key any part of which holds ``password``, ``passwd``,
``secret``, ``credential``, ``api_key`` / ``apikey``, or has ``token``, ``key`` or ``auth`` as a
word (``access_token``, ``private_key``, ``hfToken``; not ``tokenizer``) has its value replaced
by ``***``, and any value keeps no ``user:password@`` in a URI nor a ``?token=...`` query value.
Environment variables are never read for logging.
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
# Anywhere in a key's part: these words only name secrets.
_SECRET_KEY = re.compile(r"(password|passwd|secret|credential|api_?key)", re.IGNORECASE)
# As a whole word of the part (``access_token``, ``private_key``; not ``tokenizer``, ``keyboard``).
_SECRET_WORDS = {"token", "tokens", "pwd", "key", "keys", "auth"}
_WORD_SPLIT = re.compile(r"[_\-\s]+|(?<=[a-z0-9])(?=[A-Z])")
_URI_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^/@:\s]+):[^/@\s]+@")
_QUERY_SECRET = re.compile(
    r"(?P<name>[?&;](?:[\w-]*(?:password|passwd|secret|token|api_?key|credential|key|sig)))="
    r"[^&;#\s]+",
    re.IGNORECASE,
)
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
    """``http://user:pw@host`` -> ``http://user:***@host``; ``?token=abc`` -> ``?token=***``."""
    text = _URI_USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{REDACTED}@", text)
    return _QUERY_SECRET.sub(lambda m: f"{m['name']}={REDACTED}", text)


def is_secret_key(key: str) -> bool:
    """Whether a (dotted) config key names a secret; every part of the path counts, so
    ``secrets.db`` and ``db.password`` both do."""
    for part in str(key).split("."):
        if _SECRET_KEY.search(part):
            return True
        words = [w.lower() for w in _WORD_SPLIT.split(part) if w]
        if any(w in _SECRET_WORDS for w in words):
            return True
    return False


def redact_value(value: Any) -> Any:
    """``value`` with URI credentials removed from every string in it."""
    if isinstance(value, str):
        return redact_uri(value)
    if isinstance(value, Mapping):
        return {k: REDACTED if is_secret_key(k) else redact_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_value(v) for v in value]
    return value


def redact_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The nested config with every secret value replaced by ``***`` (same shape)."""
    return dict(redact_value(config))


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
    for key, value in flatten(redact_config(config)).items():
        text = REDACTED if is_secret_key(key) else redact_uri(as_text(value))
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


_OVERRIDE = re.compile(r"^(?P<prefix>[+~]*)(?P<key>[\w.\-/@]+)=(?P<value>.*)$", re.DOTALL)


def redact_override(text: str) -> str:
    """``db.password=xyz`` -> ``db.password=***``; other overrides keep their value, without URI
    credentials."""
    match = _OVERRIDE.match(text)
    if match and is_secret_key(match["key"].split("@")[0]):
        return f"{match['prefix']}{match['key']}={REDACTED}"
    return redact_uri(text)


def _redact_tree(value: Any) -> Any:
    if isinstance(value, str):
        return redact_override(value)
    if isinstance(value, Mapping):
        return {
            k: REDACTED if isinstance(k, str) and is_secret_key(k) else _redact_tree(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_redact_tree(v) for v in value]
    return value


def redact_saved_config(run_dir: Any) -> list[str]:
    """Redact the config Hydra saved in ``<run_dir>/.hydra`` (``config.yaml``, ``overrides.yaml``,
    ``hydra.yaml``, whose ``overrides.task`` repeats the command line), in place; returns the
    files it rewrote. A file without a secret is left as Hydra wrote it."""
    from pathlib import Path

    import yaml

    rewritten = []
    for path in sorted((Path(run_dir) / ".hydra").glob("*.yaml")):
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError):
            continue
        redacted = _redact_tree(data)
        if redacted != data:
            path.write_text(yaml.safe_dump(redacted, sort_keys=False), encoding="utf-8")
            rewritten.append(path.name)
    return rewritten
