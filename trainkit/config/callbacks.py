"""Every option of every library callback is a config key, generated from its signature.

Each callback of ``callbacks/`` gets a typed schema (a dataclass made from the parameters of its
``__init__``: every option with its default and type) stored in Hydra's ConfigStore as
``callbacks/schema/<entry>``. The entry files ``conf/callbacks/entry/<entry>.yaml`` extend it, and
the stacks ``conf/callbacks/<stack>.yaml`` are defaults lists of entries. So
``callbacks.early_stopping.min_delta=10`` works without ``+``, Hydra checks the value's type, and
a misspelt option is refused when the config is composed.

The signatures are read from the modules' source (``ast``), not by importing them: importing a
callback imports TensorFlow, which would cost seconds before every composition, error or
``--help`` included. Where the source cannot tell (no ``__init__`` in the class, a default that
is not a literal), the class is imported and :func:`inspect.signature` used instead.
``tests/test_stacks_config.py`` checks that both ways agree for every library callback.

The schemas are registered by the Hydra plugin ``hydra_plugins/trainkit_schemas``, which Hydra
imports before any composition (``run.py``, the compose API in tests and benchmarks), so no
entry point can forget it. :func:`register` may also be called directly; it is idempotent.

At build time :func:`check_entry` checks every ``callbacks.<name>`` entry, the user's own
included, against its target's signature, and :func:`explain_compose_error` turns Hydra's
"Key ... is not in struct" about a callback into a line that names the callback's options or the
stacks that hold it.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import importlib
import importlib.util
import inspect
import re
from collections.abc import Iterable, Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any, Optional

from trainkit.errors import ConfigError

# entry name (conf/callbacks/entry/<name>.yaml, callbacks/<name>.py) -> the callback class
ENTRIES: dict[str, str] = {
    "hook_profiler": "callbacks.hook_profiler.HookProfiler",
    "timing": "callbacks.timing.Timing",
    "lr_schedule": "callbacks.lr_schedule.LRSchedule",
    "reduce_lr_on_plateau": "callbacks.reduce_lr_on_plateau.ReduceLROnPlateau",
    "nan_guard": "callbacks.nan_guard.NanGuard",
    "progress": "callbacks.progress.Progress",
    "hook_logger": "callbacks.hook_logger.HookLogger",
    "tensorboard": "callbacks.tensorboard.TensorBoardLogger",
    "mlflow": "callbacks.mlflow.MLflowLogger",
    "early_stopping": "callbacks.early_stopping.EarlyStopping",
    "checkpoint": "callbacks.checkpoint.Checkpoint",
    "backup": "callbacks.backup.Backup",
    "lr_finder": "callbacks.lr_finder.LRFinder",
    "backbone_finetuning": "callbacks.backbone_finetuning.BackboneFinetuning",
    "model_report": "callbacks.model_report.ModelReport",
    "precise_bn": "callbacks.precise_bn.PreciseBatchNorm",
}

# Callbacks whose ``**options`` are another function's keyword-only parameters: those become keys
# too (with that function's defaults, so passing them all changes nothing).
VAR_KEYWORD_OPTIONS: dict[str, str] = {
    "callbacks.lr_schedule.LRSchedule": "trainkit.schedules.lr_table",
}

SCHEMA_GROUP = "callbacks/schema"
CONF_DIR = Path(__file__).resolve().parents[2] / "conf"

_NO_DEFAULT = inspect.Parameter.empty
_SIMPLE = {"int": int, "float": float, "str": str, "bool": bool}
_SEQUENCE = re.compile(r"(?:Sequence|list|List|tuple|Tuple)\[(int|float|str|bool)(?:, \.\.\.)?\]")


@dataclasses.dataclass(frozen=True)
class Option:
    """One keyword a callable takes: its name, annotation (as written) and default."""

    name: str
    annotation: str
    default: Any = _NO_DEFAULT


@dataclasses.dataclass(frozen=True)
class Signature:
    """What a callable accepts: named options, and whether it takes ``**kwargs`` too."""

    options: tuple[Option, ...]
    var_keyword: bool = False

    @property
    def names(self) -> list[str]:
        return [option.name for option in self.options]


class _NeedsImport(Exception):
    """The source alone does not tell the signature."""


# -- reading signatures -------------------------------------------------------------------------


def _split_target(target: str) -> tuple[str, str]:
    module, _, name = target.rpartition(".")
    if not module:
        raise _NeedsImport(target)
    return module, name


def _source_signature(target: str) -> Signature:
    """The signature of ``module.Class.__init__`` (or ``module.function``) read with ``ast``."""
    module, name = _split_target(target)
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        raise _NeedsImport(target)
    tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
    node = next(
        (n for n in tree.body if isinstance(n, ast.ClassDef | ast.FunctionDef) and n.name == name),
        None,
    )
    if isinstance(node, ast.ClassDef):
        node = next(
            (n for n in node.body if isinstance(n, ast.FunctionDef) and n.name == "__init__"),
            None,
        )
        skip = 1  # self
    else:
        skip = 0
    if node is None:
        raise _NeedsImport(target)
    args = node.args
    positional = [*args.posonlyargs, *args.args][skip:]
    defaults: list[ast.expr | None] = [None] * (len(positional) - len(args.defaults))
    defaults += list(args.defaults)
    pairs = list(zip(positional, defaults, strict=True))
    pairs += list(zip(args.kwonlyargs, args.kw_defaults, strict=True))
    options = []
    for arg, default in pairs:
        annotation = ast.unparse(arg.annotation) if arg.annotation is not None else ""
        if default is None:
            value: Any = _NO_DEFAULT
        else:
            try:
                value = ast.literal_eval(default)
            except ValueError:
                raise _NeedsImport(target) from None
        options.append(Option(arg.arg, annotation, value))
    return Signature(tuple(options), var_keyword=args.kwarg is not None)


def _imported_signature(target: str) -> Signature:
    from hydra.utils import get_object

    obj = get_object(target)
    parameters = list(inspect.signature(obj).parameters.values())
    options = []
    for p in parameters:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        annotation = p.annotation if isinstance(p.annotation, str) else _type_name(p.annotation)
        options.append(Option(p.name, annotation, p.default))
    var_keyword = any(p.kind is p.VAR_KEYWORD for p in parameters)
    return Signature(tuple(options), var_keyword=var_keyword)


def _type_name(annotation: Any) -> str:
    if annotation is inspect.Parameter.empty:
        return ""
    return getattr(annotation, "__name__", None) or str(annotation)


@cache
def signature(target: str, *, from_source: bool = True) -> Signature:
    """The options ``target`` takes (a class's ``__init__`` without ``self``, or a function's),
    with those of :data:`VAR_KEYWORD_OPTIONS` added for the callbacks that forward ``**options``.
    Read from the source when it can be, else by importing ``target``."""
    try:
        if not from_source:
            raise _NeedsImport(target)
        found = _source_signature(target)
    except _NeedsImport:
        found = _imported_signature(target)
    extra_source = VAR_KEYWORD_OPTIONS.get(target)
    if found.var_keyword and extra_source:
        extra = signature(extra_source, from_source=from_source)
        known = set(found.names)
        # the function's own positional parameters are what the callback computes itself
        keyword_only = _keyword_only(extra_source, extra, from_source)
        added = tuple(o for o in extra.options if o.name in keyword_only and o.name not in known)
        found = Signature(found.options + added, var_keyword=False)
    return found


def _keyword_only(target: str, found: Signature, from_source: bool) -> set[str]:
    if from_source:
        module, name = _split_target(target)
        spec = importlib.util.find_spec(module)
        assert spec is not None and spec.origin
        tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name == name:
                return {a.arg for a in node.args.kwonlyargs}
    from hydra.utils import get_object

    parameters = inspect.signature(get_object(target)).parameters.values()
    return {p.name for p in parameters if p.kind is p.KEYWORD_ONLY}


# -- schemas ------------------------------------------------------------------------------------


def _split_union(annotation: str) -> list[str]:
    """``'list[str] | tuple[str, ...] | None'`` -> its members, split at bracket depth 0."""
    parts, depth, current = [], 0, ""
    for char in annotation:
        depth += char == "["
        depth -= char == "]"
        if char == "|" and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += char
    parts.append(current.strip())
    return [p for p in parts if p]


def field_type(annotation: str, default: Any) -> Any:
    """The OmegaConf type of an option: int, float, str, bool, a list of those, each Optional
    when None is allowed; ``Any`` for what OmegaConf cannot check (unions, objects)."""
    members = _split_union(annotation)
    optional = "None" in members or default is None
    members = [m for m in members if m != "None"]
    base: Any = Any
    if len(members) == 1:
        member = members[0]
        sequence = _SEQUENCE.fullmatch(member)
        if member in _SIMPLE:
            base = _SIMPLE[member]
        elif sequence:
            base = list[_SIMPLE[sequence.group(1)]]  # type: ignore[index]
    if base is float and isinstance(default, bool):
        base = Any
    return Optional[base] if optional and base is not Any else base  # noqa: UP045 - OmegaConf 2.3 reads Optional


def schema(target: str, *, from_source: bool = True) -> type:
    """A dataclass with ``_target_`` and every option of ``target`` with its default and type.

    Options without a default are ``???`` (mandatory) in the config."""
    fields: list[tuple[str, Any, Any]] = [("_target_", str, dataclasses.field(default=target))]
    for option in signature(target, from_source=from_source).options:
        default = option.default
        kind = field_type(option.annotation, None if default is _NO_DEFAULT else default)
        if default is _NO_DEFAULT:
            spec = dataclasses.field(default="???")
        elif isinstance(default, list | tuple | dict):
            value = list(default) if not isinstance(default, dict) else dict(default)
            spec = dataclasses.field(default_factory=lambda value=value: value)
        else:
            spec = dataclasses.field(default=default)
        fields.append((option.name, kind, spec))
    class_name = target.rpartition(".")[2]
    return dataclasses.make_dataclass(f"{class_name}Options", fields)


_registered = False


def register() -> None:
    """Store each library callback's schema as ``callbacks/schema/<entry>`` (once)."""
    global _registered
    if _registered:
        return
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    for name, target in ENTRIES.items():
        store.store(group=SCHEMA_GROUP, name=name, node=schema(target))
    _registered = True


# -- stacks -------------------------------------------------------------------------------------


@cache
def stacks() -> dict[str, tuple[str, ...]]:
    """Each stack of ``conf/callbacks/`` and its entries, in call order (its defaults list)."""
    import yaml

    found: dict[str, tuple[str, ...]] = {}
    for path in sorted((CONF_DIR / "callbacks").glob("*.yaml")):
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        names = []
        for item in data.get("defaults") or []:
            if isinstance(item, Mapping):
                key = next(iter(item))
                if "@" in str(key):
                    names.append(str(key).split("@", 1)[1])
        found[path.stem] = tuple(names)
    return found


def stacks_holding(entry: str) -> list[str]:
    return [stack for stack, names in stacks().items() if entry in names]


@cache
def experiments_holding(entry: str) -> list[str]:
    """The experiments of ``conf/experiment/`` that add ``entry`` to the stack."""
    import yaml

    found = []
    for path in sorted((CONF_DIR / "experiment").glob("*.yaml")):
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        for item in data.get("defaults") or []:
            if isinstance(item, Mapping) and str(next(iter(item))).endswith(f"@callbacks.{entry}"):
                found.append(path.stem)
    return found


def how_to_add(entry: str) -> str:
    """The ways to get a library entry that the chosen stack lacks, for error messages."""
    holders = stacks_holding(entry)
    add = f"+callbacks/entry@callbacks.{entry}={entry}"
    choices = [f"callbacks={stack}" for stack in holders]
    choices += [f"experiment={name}" for name in experiments_holding(entry)]
    if not choices:
        return f"add it with {add}"
    return f"choose a config that holds it ({' or '.join(choices)}) or add it with {add}"


# -- checks -------------------------------------------------------------------------------------


def _did_you_mean(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def unknown_option_message(entry: str, target: str, unknown: Sequence[str]) -> str:
    options = signature(target).names
    class_name = target.rpartition(".")[2]
    word = "option" if len(unknown) == 1 else "options"
    listed = ", ".join(repr(u) for u in unknown)
    hint = _did_you_mean(unknown[0], options) if len(unknown) == 1 else ""
    return (
        f"callbacks.{entry} ({class_name}) has no {word} {listed}{hint}; "
        f"its options: {', '.join(options) or '(none)'}"
    )


def missing_entry_message(entry: str, stack: str | None = None) -> str:
    where = f"the callback stack '{stack}'" if stack else "the chosen callback stack"
    if entry in ENTRIES:
        return f"callbacks.{entry} is not in {where}: {how_to_add(entry)}"
    library = ", ".join(ENTRIES)
    return (
        f"callbacks.{entry} is not in {where} and is not a library callback ({library}): "
        f"add your own with +callbacks.{entry}._target_=mypkg.MyCallback"
    )


def check_entry(name: str, entry: Any) -> None:
    """Raise :class:`ConfigError` for options of a library callback set without the callback
    (``+callbacks.lr_schedule.schedule=one_cycle`` on a stack without it): the message says
    which configs hold it and how to add it. The options of an entry with a ``_target_`` are
    checked against its signature by :func:`trainkit.stack.check_callback_entry`."""
    if isinstance(entry, Mapping) and "_target_" not in entry and name in ENTRIES:
        raise ConfigError(missing_entry_message(name))


_STRUCT_KEY = re.compile(r"Key '([^']+)' (?:is not in struct|not in '[^']+')")
_FULL_KEY = re.compile(r"full_key: (\S+)")
_ADDED_EXPERIMENT = re.compile(r"Multiple values for experiment")


def chosen_stack(overrides: Sequence[str]) -> str | None:
    """The stack the overrides choose (``callbacks=full``); ``default`` unless an experiment may
    have chosen another; None when it cannot be told without composing."""
    choice = None
    for override in overrides:
        key, _, value = override.partition("=")
        if key == "callbacks":
            choice = value
    if choice is None and not any(o.lstrip("+").startswith("experiment=") for o in overrides):
        choice = "default"
    return choice


def explain_compose_error(error: BaseException, overrides: Sequence[str] = ()) -> str | None:
    """One line for a composition error about a callback key (or ``+experiment=``), or None
    for any other error, which Hydra reports its own way.

    ``error`` is Hydra's ``ConfigCompositionException``; its cause holds OmegaConf's message
    ("Key 'patiense' not in 'EarlyStoppingOptions' ... full_key: callbacks.early_stopping...").
    """
    texts = []
    node: BaseException | None = error
    while node is not None:
        texts.append(str(node))
        node = node.__cause__ or node.__context__
    text = "\n".join(texts)
    if _ADDED_EXPERIMENT.search(text):
        added = [o for o in overrides if o.startswith("+experiment=")]
        name = added[0].partition("=")[2] if added else "NAME"
        return (
            f"experiments are chosen like debug=fast, without '+': experiment={name} "
            "(conf/experiment/)"
        )
    full = _FULL_KEY.search(text)
    if not _STRUCT_KEY.search(text) or not full:
        return None
    parts = full.group(1).split(".")
    if parts[0] != "callbacks" or len(parts) < 2:
        return None
    entry = parts[1]
    if len(parts) == 2:
        return missing_entry_message(entry, chosen_stack(overrides))
    if entry in ENTRIES and len(parts) == 3:
        return unknown_option_message(entry, ENTRIES[entry], [parts[2]])
    return None


def _touches_callbacks(override: str) -> bool:
    key = override.partition("=")[0].lstrip("+~")
    return key.startswith("callbacks.") or key == "experiment"


def callback_override_error(
    argv: Sequence[str], config_dir: str | Path = CONF_DIR, config_name: str = "config"
) -> str | None:
    """The one-line error for command-line overrides of callbacks that cannot compose, or None.

    ``run.py`` calls this before ``hydra.main`` (which would print Hydra's multi-line message
    and its advice to add ``+``, wrong for a typo). Only command lines that touch a
    ``callbacks.`` key or ``experiment`` are composed here (once more, about 0.3 s); sweeps are
    left to Hydra."""
    from hydra._internal.utils import get_args_parser
    from hydra.errors import ConfigCompositionException

    try:
        args = get_args_parser().parse_args(list(argv))
    except SystemExit:
        return None
    overrides = list(args.overrides or [])
    if args.multirun or args.help or args.hydra_help or not any(map(_touches_callbacks, overrides)):
        return None
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
            compose(config_name, overrides=overrides)
    except ConfigCompositionException as exc:
        return explain_compose_error(exc, overrides)
    except Exception:  # noqa: BLE001 - anything else is Hydra's to report, as usual
        return None
    finally:
        GlobalHydra.instance().clear()
    return None


def exit_on_callback_override_error(argv: Sequence[str]) -> None:
    """Print ``error: ...`` and exit 2 when :func:`callback_override_error` finds one."""
    import sys

    message = callback_override_error(argv)
    if message:
        print(f"error: {message}", file=sys.stderr, flush=True)
        raise SystemExit(2)
