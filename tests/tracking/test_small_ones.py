"""Secrets stay out of every writer; replay with nothing to do; a resumed run's changed params;
the zoo listing without building models."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

import keras
import pytest
from mlflow import MlflowClient

from callbacks.hook_logger import HookLogger
from callbacks.mlflow import MLflowLogger
from callbacks.tensorboard import TensorBoardLogger
from tests.tracking.helpers import make_context, run_job
from trainkit.tracking.flatten import REDACTED, to_params

WORKTREE = Path(__file__).resolve().parents[2]

SECRETS = {
    "db": {"password": "pw-1-secret"},
    "hub": {"token": "tok-2-secret"},
    "api_key": "key-3-secret",
    "aws": {"secret_access_key": "sak-4-secret", "region": "eu-west-1"},
    "storage": {"uri": "s3://user:pass-5-secret@bucket/x"},
    "webhook": "https://hooks.local/x?token=tok-6-secret&channel=ml",
    "private_key": "pk-7-secret",
}
ENV_SECRET = "env-8-secret"


class WritesASecretLog(keras.callbacks.Callback):
    """A callback that puts a token-named string into the logs (it happens)."""

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs["api_token"] = "tok-9-secret"


def test_secret_keys_and_uri_credentials_are_redacted() -> None:
    params = to_params({**SECRETS, "tokenizer": "bpe", "keyboard": 1, "monitor_mode": "min"})
    assert params["db.password"] == REDACTED
    assert params["hub.token"] == REDACTED
    assert params["api_key"] == REDACTED
    assert params["aws.secret_access_key"] == REDACTED
    assert params["private_key"] == REDACTED
    assert params["aws.region"] == "eu-west-1"
    assert params["storage.uri"] == f"s3://user:{REDACTED}@bucket/x"
    assert params["webhook"] == f"https://hooks.local/x?token={REDACTED}&channel=ml"
    # words that merely contain one
    assert params["tokenizer"] == "bpe" and params["keyboard"] == "1"


def test_the_model_summary_is_not_cut_at_80_columns() -> None:
    from trainkit.tracking.summary import model_summary

    inputs = keras.Input((4,))
    wide = keras.layers.Dense(1234, name="a_layer_with_a_very_long_name_" + "x" * 50)(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3, name="head")(wide))
    text = model_summary(model)
    row = next(line for line in text.splitlines() if "a_layer_with" in line)
    assert len(row) > 100
    assert row.split()[-1] == "6,170" and "(None, 1234)" in row
    assert "Param #" in text and f"Total params: {model.count_params():,}" in text


def _all_bytes(*roots: Path) -> bytes:
    chunks = []
    for root in roots:
        for path in root.rglob("*"):
            if path.is_file():
                chunks.append(path.read_bytes())
    return b"\n".join(chunks)


def test_no_secret_reaches_mlflow_tensorboard_the_hook_log_or_the_saved_config(
    tmp_path: Path, arrays: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MY_SERVICE_TOKEN", ENV_SECRET)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", ENV_SECRET)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    store = tmp_path / "store"
    uri = f"sqlite:///{store / 'mlflow.db'}"
    store.mkdir()
    context = make_context(tmp_path / "run", uri, arrays)
    context.config.update(SECRETS)
    logger = MLflowLogger(flush_interval=0.5)
    done = run_job(
        context,
        [HookLogger(), TensorBoardLogger(histogram_freq=0), logger],
        arrays,
        extra=[WritesASecretLog()],
    )
    assert done.status == "FINISHED"

    run = MlflowClient(uri).get_run(logger.run.run_id)
    assert run.data.params["db.password"] == REDACTED
    config_yaml = (context.run_dir / "mlflow" / "config.yaml").read_text()
    assert "password: '***'" in config_yaml and "eu-west-1" in config_yaml
    events = [json.loads(line) for line in (context.run_dir / "events.jsonl").open()]
    logged = [e["logs"]["api_token"] for e in events if "api_token" in e["logs"]]
    assert logged and set(logged) == {"***"}
    # Every byte the job wrote: the run directory (event files, hook log, local copies of the
    # artifacts), the SQLite store and its artifact folder.
    written = _all_bytes(context.run_dir, store)
    assert b"tensorboard" in written or (context.run_dir / "tensorboard").exists()
    for secret in [*_leaves(SECRETS), "tok-9-secret", ENV_SECRET]:
        if "secret" in secret:
            assert secret.encode() not in written, secret
    # nothing written anywhere else (the working directory stays empty)
    assert list(cwd.iterdir()) == []


def _leaves(config: dict) -> list[str]:
    out = []
    for value in config.values():
        out.extend(_leaves(value) if isinstance(value, dict) else [str(value)])
    out.extend(["pass-5-secret", "tok-6-secret"])
    return out


@pytest.mark.slow
def test_a_resumed_run_says_which_params_changed(tmp_path: Path, arrays: Any) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    first = MLflowLogger()
    run_job(make_context(tmp_path / "run", uri, arrays), [first], arrays, epochs=1, evaluate=False)
    second = MLflowLogger()
    context = make_context(tmp_path / "run", uri, arrays)
    context.config["trainer"]["epochs"] = 3
    run_job(context, [second], arrays, epochs=2, initial_epoch=1, evaluate=False)
    assert second.run.run_id == first.run.run_id
    run = MlflowClient(uri).get_run(first.run.run_id)
    # MLflow refuses to change a param: the first value stays, the new one is a tag
    assert run.data.params["trainer.epochs"] == "2"
    assert run.data.tags["resumed.trainer.epochs"] == "3"
    assert run.data.tags["resumed.fit.epochs"] == "2"
    assert "resumed.model.name" not in run.data.tags  # unchanged values say nothing


def _python(*args: str, cwd: Path = WORKTREE) -> tuple[subprocess.CompletedProcess, float]:
    """Run ``python args`` and return it with the CPU seconds it used (load-independent)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "COLUMNS": "160"}
    done = subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return done, cpu


@pytest.mark.slow
def test_replay_with_nothing_to_replay_exits_0(tmp_path: Path) -> None:
    # Both commands at once: two processes that share nothing.
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    started = [
        subprocess.Popen(
            [sys.executable, "-m", "trainkit.tracking.replay", str(folder)],
            cwd=WORKTREE,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for folder in (tmp_path, tmp_path / "nope")
    ]
    (out, err), (_, missing_err) = (process.communicate(timeout=300) for process in started)
    assert started[0].returncode == 0, err
    assert "nothing to replay" in out
    assert started[1].returncode == 1
    assert "not a directory" in missing_err


@pytest.mark.slow
def test_the_zoo_list_prints_without_building_a_model() -> None:
    from trainkit.models import available_models

    done, cpu = _python("-m", "trainkit.models")
    assert done.returncode == 0, done.stderr
    for name in available_models():
        assert name in done.stdout
    assert "params" not in done.stdout  # nothing built, nothing counted
    # CPU seconds, not wall time: the machine is shared. Building the zoo takes minutes of
    # CPU; the listing is the import of TensorFlow (~7 s of CPU here, which the package's
    # __init__ does whatever __main__ does) plus the table.
    assert cpu < 12.0, f"{cpu:.1f} s of CPU"


def test_hydra_saved_config_is_redacted_in_place(tmp_path: Path) -> None:
    import yaml

    from trainkit.tracking.flatten import redact_saved_config

    hydra_dir = tmp_path / ".hydra"
    hydra_dir.mkdir()
    config = {"trainer": {"epochs": 2}, "db": {"password": "pw-1-secret", "host": "db.local"}}
    (hydra_dir / "config.yaml").write_text(yaml.safe_dump(config))
    overrides = ["trainer.epochs=2", "+db.password=pw-1-secret", "+hub.uri=https://u:p-2@h/x"]
    (hydra_dir / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    hydra = {"hydra": {"overrides": {"task": overrides}, "job": {"name": "run"}}}
    (hydra_dir / "hydra.yaml").write_text(yaml.safe_dump(hydra))
    untouched = (hydra_dir / "hydra.yaml").stat().st_mtime_ns

    assert redact_saved_config(tmp_path) == ["config.yaml", "hydra.yaml", "overrides.yaml"]
    written = _all_bytes(hydra_dir)
    assert b"pw-1-secret" not in written and b"p-2" not in written
    saved = yaml.safe_load((hydra_dir / "config.yaml").read_text())
    assert saved == {"trainer": {"epochs": 2}, "db": {"password": REDACTED, "host": "db.local"}}
    assert yaml.safe_load((hydra_dir / "overrides.yaml").read_text()) == [
        "trainer.epochs=2",
        f"+db.password={REDACTED}",
        f"+hub.uri=https://u:{REDACTED}@h/x",
    ]
    assert redact_saved_config(tmp_path) == []  # nothing left: nothing rewritten
    assert untouched <= (hydra_dir / "hydra.yaml").stat().st_mtime_ns
