"""The callback stacks compose from one file per entry, and every option of a callback is a key.

``BEFORE`` is what each stack rendered before its entries became files. A stack renders today
with the same entries in the same order and, in each entry, the same keys in the same order
with the same values; the only new keys are the callback's other options, each with its own
signature's default (so the callback receives what it received before).
"""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import keras
import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from trainkit.config import callbacks as cbconf
from trainkit.errors import ConfigError
from trainkit.stack import instantiate_callbacks

ROOT = Path(__file__).resolve().parents[1]

# Rendered on main before the entries became files (OmegaConf.to_container(cfg.callbacks)),
# one stack per key; experiments composed with +experiment=NAME then.
BEFORE: dict[str, dict[str, dict]] = {
    "none": {},
    "minimal": {
        "timing": {"_target_": "callbacks.timing.Timing"},
        "progress": {"_target_": "callbacks.progress.Progress"},
        "mlflow": {
            "_target_": "callbacks.mlflow.MLflowLogger",
            "log_every_n_steps": 1,
            "log_model": None,
            "log_plots": True,
            "log_checkpoint": True,
        },
    },
    "default": {
        "timing": {"_target_": "callbacks.timing.Timing"},
        "nan_guard": {"_target_": "callbacks.nan_guard.NanGuard"},
        "progress": {"_target_": "callbacks.progress.Progress"},
        "tensorboard": {
            "_target_": "callbacks.tensorboard.TensorBoardLogger",
            "log_every_n_steps": 1,
            "histogram_freq": 1,
            "profile_batch": 0,
            "write_graph": True,
            "sample_images": True,
            "hparams": True,
        },
        "mlflow": {
            "_target_": "callbacks.mlflow.MLflowLogger",
            "log_every_n_steps": 1,
            "log_model": None,
            "log_plots": True,
            "log_checkpoint": True,
        },
        "early_stopping": {
            "_target_": "callbacks.early_stopping.EarlyStopping",
            "monitor": "val_loss",
            "patience": 5,
            "restore_best_weights": True,
        },
        "checkpoint": {
            "_target_": "callbacks.checkpoint.Checkpoint",
            "monitor": "val_accuracy",
            "save_top_k": 1,
            "save_last": True,
        },
    },
    "full": {
        "hook_profiler": {"_target_": "callbacks.hook_profiler.HookProfiler", "print_table": True},
        "timing": {"_target_": "callbacks.timing.Timing"},
        "lr_schedule": {"_target_": "callbacks.lr_schedule.LRSchedule", "schedule": "constant"},
        "reduce_lr_on_plateau": {
            "_target_": "callbacks.reduce_lr_on_plateau.ReduceLROnPlateau",
            "monitor": "val_loss",
            "factor": 0.5,
            "patience": 3,
            "min_lr": 1e-06,
        },
        "nan_guard": {"_target_": "callbacks.nan_guard.NanGuard"},
        "progress": {"_target_": "callbacks.progress.Progress"},
        "hook_logger": {"_target_": "callbacks.hook_logger.HookLogger", "every_n_batches": 1},
        "tensorboard": {
            "_target_": "callbacks.tensorboard.TensorBoardLogger",
            "log_every_n_steps": 1,
            "histogram_freq": 1,
            "profile_batch": 0,
            "write_graph": True,
            "sample_images": True,
            "hparams": True,
        },
        "mlflow": {
            "_target_": "callbacks.mlflow.MLflowLogger",
            "log_every_n_steps": 1,
            "log_model": None,
            "log_plots": True,
            "log_checkpoint": True,
        },
        "early_stopping": {
            "_target_": "callbacks.early_stopping.EarlyStopping",
            "monitor": "val_loss",
            "patience": 6,
            "restore_best_weights": True,
        },
        "checkpoint": {
            "_target_": "callbacks.checkpoint.Checkpoint",
            "monitor": "val_accuracy",
            "save_top_k": 1,
            "save_last": True,
            "every_n_steps": None,
        },
        "backup": {
            "_target_": "callbacks.backup.Backup",
            "save_every_n_steps": None,
            "delete_on_success": True,
        },
    },
    "experiment=example": {
        "hook_profiler": {"_target_": "callbacks.hook_profiler.HookProfiler", "print_table": True},
        "timing": {"_target_": "callbacks.timing.Timing"},
        "lr_schedule": {"_target_": "callbacks.lr_schedule.LRSchedule", "schedule": "constant"},
        "reduce_lr_on_plateau": {
            "_target_": "callbacks.reduce_lr_on_plateau.ReduceLROnPlateau",
            "monitor": "val_loss",
            "factor": 0.5,
            "patience": 3,
            "min_lr": 1e-06,
        },
        "nan_guard": {"_target_": "callbacks.nan_guard.NanGuard"},
        "progress": {"_target_": "callbacks.progress.Progress"},
        "hook_logger": {"_target_": "callbacks.hook_logger.HookLogger", "every_n_batches": 1},
        "tensorboard": {
            "_target_": "callbacks.tensorboard.TensorBoardLogger",
            "log_every_n_steps": 1,
            "histogram_freq": 1,
            "profile_batch": 0,
            "write_graph": True,
            "sample_images": True,
            "hparams": True,
        },
        "mlflow": {
            "_target_": "callbacks.mlflow.MLflowLogger",
            "log_every_n_steps": 1,
            "log_model": None,
            "log_plots": True,
            "log_checkpoint": True,
        },
        "early_stopping": {
            "_target_": "callbacks.early_stopping.EarlyStopping",
            "monitor": "val_loss",
            "patience": 6,
            "restore_best_weights": True,
        },
        "checkpoint": {
            "_target_": "callbacks.checkpoint.Checkpoint",
            "monitor": "val_accuracy",
            "save_top_k": 1,
            "save_last": True,
            "every_n_steps": None,
        },
        "backup": {
            "_target_": "callbacks.backup.Backup",
            "save_every_n_steps": None,
            "delete_on_success": True,
        },
    },
    "experiment=finetune": {
        "timing": {"_target_": "callbacks.timing.Timing"},
        "nan_guard": {"_target_": "callbacks.nan_guard.NanGuard"},
        "progress": {"_target_": "callbacks.progress.Progress"},
        "tensorboard": {
            "_target_": "callbacks.tensorboard.TensorBoardLogger",
            "log_every_n_steps": 1,
            "histogram_freq": 1,
            "profile_batch": 0,
            "write_graph": True,
            "sample_images": True,
            "hparams": True,
        },
        "mlflow": {
            "_target_": "callbacks.mlflow.MLflowLogger",
            "log_every_n_steps": 1,
            "log_model": None,
            "log_plots": True,
            "log_checkpoint": True,
        },
        "early_stopping": {
            "_target_": "callbacks.early_stopping.EarlyStopping",
            "monitor": "val_loss",
            "patience": 5,
            "restore_best_weights": True,
        },
        "checkpoint": {
            "_target_": "callbacks.checkpoint.Checkpoint",
            "monitor": "val_accuracy",
            "save_top_k": 1,
            "save_last": True,
        },
        "backbone_finetuning": {
            "_target_": "callbacks.backbone_finetuning.BackboneFinetuning",
            "unfreeze_at_epoch": 5,
            "lr_divisor": 10,
            "train_batchnorm": False,
        },
    },
    "experiment=lr_find": {
        "timing": {"_target_": "callbacks.timing.Timing"},
        "progress": {"_target_": "callbacks.progress.Progress"},
        "mlflow": {
            "_target_": "callbacks.mlflow.MLflowLogger",
            "log_every_n_steps": 1,
            "log_model": None,
            "log_plots": True,
            "log_checkpoint": True,
        },
        "lr_finder": {
            "_target_": "callbacks.lr_finder.LRFinder",
            "start_lr": 1e-07,
            "end_lr": 10.0,
            "num_steps": 100,
            "suggestion": "valley",
        },
    },
}


def _plain(value):
    return list(value) if isinstance(value, tuple) else value


def assert_renders_as_before(now: dict, before: dict) -> None:
    assert list(now) == list(before), "the call order changed"
    for name, old in before.items():
        new = now[name]
        target = old["_target_"]
        assert new["_target_"] == target
        kept = [key for key in new if key in old]
        assert kept == list(old), f"{name}: the old keys changed order or went missing"
        for key, value in old.items():
            assert new[key] == value, f"{name}.{key}"
        options = {o.name: o.default for o in cbconf.signature(target, from_source=False).options}
        for key in set(new) - set(old):
            assert key in options, f"{name}.{key} is not an option of {target}"
            assert new[key] == _plain(options[key]), f"{name}.{key} is not its default"
        assert set(new) - {"_target_"} == set(options), f"{name}: not every option is a key"


@pytest.mark.parametrize("stack", ["none", "minimal", "default", "full"])
def test_stacks_render_as_before(compose_cfg, stack):
    cfg = compose_cfg([f"callbacks={stack}"])
    assert_renders_as_before(OmegaConf.to_container(cfg.callbacks), BEFORE[stack])


@pytest.mark.parametrize("experiment", ["example", "finetune", "lr_find"])
def test_experiments_render_as_before(compose_cfg, experiment):
    cfg = compose_cfg([f"experiment={experiment}"])
    assert_renders_as_before(
        OmegaConf.to_container(cfg.callbacks), BEFORE[f"experiment={experiment}"]
    )


def test_every_stack_is_a_defaults_list_of_entry_files():
    entries = {p.stem for p in (ROOT / "conf/callbacks/entry").glob("*.yaml")}
    modules = {
        p.stem for p in (ROOT / "callbacks").glob("*.py") if p.stem not in {"__init__", "base"}
    }
    assert entries == modules == set(cbconf.ENTRIES)
    stacks = cbconf.stacks()
    assert stacks["full"] == tuple(BEFORE["full"])
    for stack, names in stacks.items():
        assert set(names) <= entries, stack
        lines = (ROOT / f"conf/callbacks/{stack}.yaml").read_text().splitlines()
        code = [line for line in lines if not line.lstrip().startswith("#")]
        assert not any("_target_" in line for line in code), f"{stack} repeats an entry"


def test_signatures_read_from_source_match_inspect():
    for name, target in cbconf.ENTRIES.items():
        from_source = cbconf.signature(target)
        imported = cbconf.signature(target, from_source=False)
        assert from_source == imported, name


def test_an_option_not_in_the_yaml_is_a_key_with_its_type(compose_cfg):
    cfg = compose_cfg(["callbacks.early_stopping.min_delta=10", "callbacks.checkpoint.mode=max"])
    assert cfg.callbacks.early_stopping.min_delta == 10.0
    assert isinstance(cfg.callbacks.early_stopping.min_delta, float)
    assert cfg.callbacks.checkpoint.mode == "max"
    with pytest.raises(ConfigCompositionException) as err:
        compose_cfg(["callbacks.early_stopping.patience=abc"])
    assert "patience" in str(err.value.__cause__)
    # the schedule's own options (LRSchedule's **options) are keys too
    cfg = compose_cfg(
        [
            "callbacks=full",
            "callbacks.lr_schedule.schedule=one_cycle",
            "callbacks.lr_schedule.div=10",
        ]
    )
    assert cfg.callbacks.lr_schedule.schedule == "one_cycle" and cfg.callbacks.lr_schedule.div == 10


def test_every_stack_builds_with_every_option(compose_cfg):
    cfg = compose_cfg(["callbacks=full", "experiment=lr_find", "callbacks=full"])
    built = instantiate_callbacks(cfg.callbacks)
    assert [cb.trainkit_name for cb in built] == list(cfg.callbacks)
    early = next(cb for cb in built if cb.trainkit_name == "early_stopping")
    assert early.patience == 6 and early.restore_best_weights


def test_misspelt_option_is_explained(compose_cfg):
    overrides = ["callbacks.early_stopping.patiense=3"]
    with pytest.raises(ConfigCompositionException) as err:
        compose_cfg(overrides)
    message = cbconf.explain_compose_error(err.value, overrides)
    assert "callbacks.early_stopping (EarlyStopping) has no option 'patiense'" in message
    assert "did you mean patience?" in message and "min_delta" in message


def test_option_of_a_callback_the_stack_lacks_is_explained(compose_cfg):
    overrides = ["callbacks.lr_schedule.schedule=one_cycle"]
    with pytest.raises(ConfigCompositionException) as err:
        compose_cfg(overrides)
    message = cbconf.explain_compose_error(err.value, overrides)
    assert "not in the callback stack 'default'" in message
    assert "callbacks=full" in message
    assert "+callbacks/entry@callbacks.lr_schedule=lr_schedule" in message
    # the way the message gives works, and the entry lands last
    cfg = compose_cfg(["+callbacks/entry@callbacks.lr_schedule=lr_schedule", *overrides])
    assert list(cfg.callbacks)[-1] == "lr_schedule"
    assert cfg.callbacks.lr_schedule.schedule == "one_cycle"
    cfg = compose_cfg(["callbacks=full", *overrides])
    assert cfg.callbacks.lr_schedule.schedule == "one_cycle"


def test_options_added_with_plus_are_checked_at_build(compose_cfg):
    cfg = compose_cfg(["+callbacks.early_stopping.patiense=3"])
    with pytest.raises(ConfigError, match="callbacks.early_stopping.*'patiense'.*min_delta"):
        instantiate_callbacks(cfg.callbacks)
    cfg = compose_cfg(["callbacks=none", "+callbacks.lr_schedule.schedule=one_cycle"])
    with pytest.raises(ConfigError, match=r"callbacks.lr_schedule is not in .*callbacks=full"):
        instantiate_callbacks(cfg.callbacks)


def test_user_callbacks_keep_working_and_are_checked(compose_cfg, tmp_path):
    log = str(tmp_path / "log.csv")
    cfg = compose_cfg(
        [
            "callbacks=minimal",
            "+callbacks.mine._target_=keras.callbacks.CSVLogger",
            f"+callbacks.mine.filename={log}",
            "+callbacks.mine.append=true",
        ]
    )
    built = instantiate_callbacks(cfg.callbacks)
    assert isinstance(built[-1], keras.callbacks.CSVLogger) and built[-1].append
    cfg = compose_cfg(
        [
            "+callbacks.mine._target_=keras.callbacks.CSVLogger",
            f"+callbacks.mine.filename={log}",
            "+callbacks.mine.seperator=tab",
        ]
    )
    with pytest.raises(ConfigError, match="callbacks.mine.*'seperator'.*filename, separator"):
        instantiate_callbacks(cfg.callbacks)
    # **kwargs callbacks take anything
    cfg = compose_cfg(["callbacks=none", "+callbacks.mine._target_=keras.callbacks.LambdaCallback"])
    assert isinstance(instantiate_callbacks(cfg.callbacks)[0], keras.callbacks.LambdaCallback)


def test_tracking_server_extends_default(compose_cfg):
    default = OmegaConf.to_container(compose_cfg([]).tracking)
    server = OmegaConf.to_container(compose_cfg(["tracking=server"]).tracking)
    assert server["uri"].startswith("http://127.0.0.1:")
    assert {k: v for k, v in server.items() if k != "uri"} == {
        k: v for k, v in default.items() if k != "uri"
    }
    text = (ROOT / "conf/tracking/server.yaml").read_text()
    assert "- default" in text and "experiment:" not in text


def test_experiment_is_chosen_like_debug(compose_cfg):
    cfg = compose_cfg(["experiment=example", "debug=fast"])
    assert cfg.tracking.experiment == "debug"  # debug comes after experiment in the list
    assert list(cfg.callbacks) == list(BEFORE["full"])
    assert compose_cfg(["experiment=example"]).tracking.experiment == "example"


def _run(*overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "run.py", *overrides, "--cfg", "job"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            ["callbacks.early_stopping.patiense=3"],
            "error: callbacks.early_stopping (EarlyStopping) has no option 'patiense'",
        ),
        (
            ["callbacks.lr_schedule.schedule=one_cycle"],
            "error: callbacks.lr_schedule is not in the callback stack 'default': choose a "
            "config that holds it (callbacks=full) or add it with "
            "+callbacks/entry@callbacks.lr_schedule=lr_schedule",
        ),
        (["+experiment=example"], "error: experiments are chosen like debug=fast"),
    ],
    ids=["misspelt", "not-in-stack", "plus-experiment"],
)
def test_run_py_prints_one_line_and_exits_2(overrides, expected):
    done = _run(*overrides)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(expected), done.stderr
    assert "Traceback" not in done.stderr


def test_signature_helpers_match_inspect_for_keras():
    # a class whose module re-exports it: read by importing it
    names = cbconf.signature("keras.callbacks.CSVLogger").names
    assert names == list(inspect.signature(keras.callbacks.CSVLogger).parameters)


def test_every_entrys_options_are_read_without_importing_it():
    """The override check before each run reads the callbacks' signatures from their source:
    a default that is not a literal would import the callback, hence TensorFlow (seconds, and
    its start-up chatter on the terminal) before any bad input is reported."""
    assert sorted(cbconf.ENTRIES) == sorted(
        p.stem for p in (ROOT / "conf" / "callbacks" / "entry").glob("*.yaml")
    )
    for target in cbconf.ENTRIES.values():
        cbconf._source_signature(target)  # raises _NeedsImport for a non-literal default
