"""The tests' preloaded interpreter (tests/preloaded.py) runs a command as ``python`` would."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests import preloaded

# The preloaded process imports TensorFlow once per test worker: with the job tests.
pytestmark = pytest.mark.slow

SCRIPT = """
import os, sys
print(sys.argv, os.getcwd(), os.environ.get("PROBE"), sys.path[0], sep="|")
import tensorflow as tf
print(float(tf.reduce_sum(tf.ones(3))))
print("to stderr", file=sys.stderr)
sys.exit(int(sys.argv[1]))
"""
WAIT = """
import os, pathlib, sys, time
pathlib.Path(sys.argv[1] + ".tmp").write_text(str(os.getpid()))
os.replace(sys.argv[1] + ".tmp", sys.argv[1])
time.sleep(120)
"""


def _script(folder: Path, name: str, text: str) -> Path:
    path = folder / "scripts" / name
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    return path


def _wait_for(path: Path) -> None:
    deadline = time.monotonic() + 60
    while not path.exists():
        assert time.monotonic() < deadline, "the command never started"
        time.sleep(0.05)


def test_a_script_gets_its_arguments_folder_environment_streams_and_status(tmp_path):
    script = _script(tmp_path, "probe.py", SCRIPT)
    env = dict(os.environ, PROBE="yes")
    done = preloaded.run(
        [sys.executable, str(script), "3"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    first, second = done.stdout.splitlines()
    assert first == f"{[str(script), '3']}|{tmp_path}|yes|{script.parent}"
    assert second == "3.0"  # TensorFlow runs in the child
    assert done.stderr == "to stderr\n" and done.returncode == 3
    again = preloaded.run([sys.executable, str(script), "0"], cwd=tmp_path, capture_output=True)
    assert again.returncode == 0 and b"|None|" in again.stdout  # nothing left from the first


def test_signals_reach_the_command_and_end_it_as_they_would(tmp_path):
    script = _script(tmp_path, "wait.py", WAIT)
    for number, code in ((signal.SIGTERM, -signal.SIGTERM), (signal.SIGINT, -signal.SIGINT)):
        marker = tmp_path / f"started-{number}"
        process = preloaded.Popen(
            [sys.executable, str(script), str(marker)], stderr=subprocess.DEVNULL
        )
        _wait_for(marker)
        assert process.poll() is None
        with pytest.raises(subprocess.TimeoutExpired):
            process.wait(0.1)
        process.send_signal(number)
        assert process.wait(30) == code


def test_python_on_a_shells_path_is_preloaded_and_dies_with_its_client(tmp_path):
    script = _script(tmp_path, "probe.py", SCRIPT)
    env = {**os.environ, **preloaded.python_on_path()}
    done = subprocess.run(
        ["bash", "-c", f"PROBE=shell python {script} 4"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 4 and "|shell|" in done.stdout, done.stderr
    # anything else is the real interpreter
    plain = subprocess.run(
        ["bash", "-c", "python -c 'import sys; print(sys.flags.no_site)'"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert plain.stdout == "0\n"
    # a client killed (a shell's timeout) takes its command with it
    marker = tmp_path / "started"
    waiting = _script(tmp_path, "wait.py", WAIT)
    client = subprocess.Popen(["bash", "-c", f"exec python {waiting} {marker}"], env=env)
    _wait_for(marker)
    client.kill()
    client.wait(10)
    deadline = time.monotonic() + 30
    pid = int(marker.read_text())
    while _running(pid):
        assert time.monotonic() < deadline, "the command outlived its killed client"
        time.sleep(0.1)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
