"""benchmarks/startup.py's parts that need no TensorFlow: the split and the import listing."""

from __future__ import annotations

import subprocess
import sys

from benchmarks import startup


def test_the_phases_add_up_to_command_to_first_step():
    names = [mark for _, a, b in startup.PHASES for mark in (a, b)]
    marks = {name: float(i) for i, name in enumerate(dict.fromkeys(names))}
    phases = startup.split(marks)
    assert [name for name, _ in phases] == [name for name, _, _ in startup.PHASES]
    # consecutive: each phase starts where the previous one ended
    for (_, _, end), (_, start, _) in zip(startup.PHASES, startup.PHASES[1:], strict=False):
        assert end == start
    total = sum(seconds for _, seconds in phases)
    assert total == marks["first_step<"] - marks["command"]


def test_slowest_imports_reads_python_importtime():
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import json, decimal"],
        capture_output=True,
        text=True,
        check=True,
    )
    names = [name for name, seconds in startup.slowest_imports(done.stderr, top=50)]
    assert "json" in names and "decimal" in names
    assert "json.decoder" not in names  # nested imports are inside their parent's time
