"""User-facing errors.

Every problem a user can fix (a bad option, a missing file, an unreachable server) is raised
as a :class:`TrainkitError`: the job prints its message on one line, with no traceback, and
exits with status 2. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class TrainkitError(Exception):
    """A problem the user can fix. The message names the problem and the fix."""

    exit_code = 2


class ConfigError(TrainkitError):
    """An option has a value that cannot work (unknown name, wrong type, out of range)."""


class InputTooSmallError(ConfigError):
    """The input image is smaller than the architecture allows."""

    def __init__(self, model: str, size: int, minimum: int) -> None:
        super().__init__(
            f"model '{model}' needs an input of at least {minimum}x{minimum} pixels, got "
            f"{size}x{size}: set data.image_size={minimum} or larger (or null for the native size)"
        )
        self.model = model
        self.size = size
        self.minimum = minimum


class DataNotFoundError(TrainkitError):
    """A data folder or dataset archive is missing."""


class WeightsNotAvailableError(TrainkitError):
    """Pretrained weights cannot be loaded (offline, missing file, incompatible model)."""


class TrackingError(TrainkitError):
    """The MLflow tracking store cannot be reached or refuses the request."""


class DataError(TrainkitError):
    """The data cannot be read (a corrupt image, a folder without classes)."""


def one_line(text: str, limit: int = 600) -> str:
    """``text`` on one line (whitespace runs, newlines included, become one space)."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def describe(exc: BaseException) -> str:
    """What the user sees of ``exc``: its message, on one line, for a :class:`TrainkitError`;
    ``Type: message`` for anything else."""
    if isinstance(exc, TrainkitError):
        return one_line(str(exc))
    return one_line(f"{exc.__class__.__name__}: {exc}")


def hydra_error(exc: BaseException, overrides: list[str]) -> str:
    """One line for an error Hydra raised while composing the config or making the run
    directory, naming the key (the override) and the fix.

    ``overrides`` are the command line's arguments, to name the one Hydra choked on when its
    message does not.
    """
    from hydra.errors import MissingConfigException, OverrideParseException
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, ValidationError

    cause = exc.__cause__ or exc.__context__
    text = str(exc)
    if isinstance(exc, MissingConfigException):
        if "Available options in" in text:
            return _missing_option(text)
        # Hydra's MissingConfigException is an OSError: not a run directory's error
        return one_line(
            f"{text.splitlines()[0]} (a config that a defaults list names is not on the config "
            "search path): check that file's defaults; run.py finds conf/ and trainkit's typed "
            "schemas (hydra_plugins/trainkit_schemas) when started as python run.py from the "
            "repository"
        )
    if isinstance(exc, OverrideParseException) or "no viable alternative" in text:
        bad = _unparsable(overrides)
        where = f"{bad}: " if bad else ""
        return one_line(
            f"{where}cannot parse this override ({text.splitlines()[0]}): quote values with "
            "special characters, e.g. 'key=\"a,b\"' (see hydra.cc override grammar)"
        )
    if isinstance(cause, ValidationError):
        return _validation(cause)
    if isinstance(cause, ConfigKeyError | ConfigAttributeError) or "not in" in text:
        return _unknown_key(f"{text}\n{cause}", overrides)
    if isinstance(exc, OSError):
        where = f" {exc.filename}" if exc.filename else ""
        return one_line(
            f"hydra.run.dir: cannot create the run directory{where} ({exc.strerror or exc}): "
            "choose a writable folder, e.g. hydra.run.dir=outputs/mine"
        )
    message = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    if cause is not None and str(cause).strip():
        message += f": {str(cause).strip().splitlines()[0]}"
    return one_line(message)


def _missing_option(text: str) -> str:
    lines = [line.strip() for line in text.splitlines()]
    head = next((line for line in lines if "Could not find" in line), lines[0])
    group, option = "?", "?"
    if "'" in head:
        wanted = head.split("'")[-2]  # 'model/resnet9000'
        group, _, option = wanted.rpartition("/")
    start = next(i for i, line in enumerate(lines) if line.startswith("Available options in"))
    choices = []
    for line in lines[start + 1 :]:
        if not line or line.startswith("Config search path"):
            break
        if not line.endswith("_schema"):  # the typed schemas stored in the group
            choices.append(line)
    return one_line(
        f"{group}={option}: no such option in config group '{group}' (Could not find "
        f"'{group}/{option}'): choose one of {', '.join(choices)}"
    )


def _unparsable(overrides: list[str]) -> str | None:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    for override in overrides:
        try:
            parser.parse_overrides([override])
        except Exception:  # noqa: BLE001 - the first override that does not parse
            return override
    return None


def _validation(err: BaseException) -> str:
    key = getattr(err, "full_key", None) or "?"
    value = getattr(err, "value", None)
    reason = str(getattr(err, "msg", err)).splitlines()[0]
    kind = "another type"
    for word, name in (
        ("Integer", "a whole number"),
        ("Float", "a number"),
        ("Bool", "true or false"),
    ):
        if word.lower() in reason.lower():
            kind = name
    default = _schema_default(key)
    example = f": set e.g. {key}={default}" if default is not None else ""
    return one_line(f"{key}={value}: {key} expects {kind} ({reason}){example}")


def _schema_default(key: str) -> Any:
    """The default of ``key`` in the typed schema, as an example of a valid value."""
    from omegaconf import OmegaConf

    from trainkit.config.schema import Config

    try:
        value = OmegaConf.select(OmegaConf.structured(Config), key, default=None)
    except Exception:  # noqa: BLE001 - a key of a group without a schema
        return None
    if isinstance(value, bool):
        return str(value).lower()
    return value if isinstance(value, int | float | str) else None


def _unknown_key(text: str, overrides: list[str]) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    key = next(
        (line.split(":", 1)[1].strip() for line in lines if line.startswith("full_key:")), None
    )
    if key is None and "'" in lines[0]:
        key = lines[0].split("'")[1]
    override = next((o for o in overrides if key and o.lstrip("+~").startswith(f"{key}=")), key)
    reason = next((line for line in lines if line.startswith("Key ")), lines[0])
    return one_line(
        f"{override}: no such key ({reason}): check its spelling; "
        "python run.py --cfg job lists every key"
    )


# -- run.py: Hydra's own errors as one line -----------------------------------------------------

_job_started = False


def mark_job_started() -> None:
    """Called by the job: from now on, an exception is the job's, not Hydra's composition."""
    global _job_started
    _job_started = True


def run_reporting_errors(hydra_main: Callable[[], Any]) -> None:
    """Run a ``@hydra.main`` function; print an error Hydra raises before the job starts
    (config composition, the run directory) as one ``error:`` line and exit with 2.

    Hydra prints such errors over several lines with exit status 1; ``HYDRA_FULL_ERROR=1``
    makes it raise them instead, which is what this relies on. A user who sets
    ``HYDRA_FULL_ERROR=1`` gets Hydra's full trace, as Hydra documents.
    """
    import os
    import sys

    from trainkit.config.schema import register

    register()
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        hydra_main()
        return
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        hydra_main()
    except Exception as exc:
        if _job_started:
            raise  # the job's own bug: its traceback is what helps
        print(f"error: {hydra_error(exc, sys.argv[1:])}", file=sys.stderr, flush=True)
        raise SystemExit(TrainkitError.exit_code) from None


def root_cause(exc: BaseException) -> str:
    """The innermost cause of ``exc`` (what Hydra's ``InstantiationException`` wraps: the
    ``ModuleNotFoundError``, the ``TypeError`` of a misspelt option, the class's own
    ``ValueError``) as ``Type: message`` on one line."""
    seen = {id(exc)}
    while exc.__cause__ is not None and id(exc.__cause__) not in seen:
        exc = exc.__cause__
        seen.add(id(exc))
    return one_line(f"{exc.__class__.__name__}: {exc}", limit=400)
