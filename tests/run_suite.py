"""The whole test suite, as CI runs it: the fast subset first, then the rest, each timed.

    .venv/bin/python tests/run_suite.py [extra pytest arguments]

1. the fast subset, ``pytest -m "not slow and not server"`` (budget: 3 minutes here);
2. everything else, ``pytest -m "slow or server"``. The project's other budget is the whole of
   ``.ci/run``, install included: 12 minutes. ``.ci/run`` exports ``TRAINKIT_CI_START``, so
   this part's budget is what is left of the 12 minutes when it starts, and the last lines
   give the whole run's time against them; run alone, the part gets 7 minutes (12 less an
   install and a fast subset of about 2.5 minutes each).

Together they are every test once. The slow part needs system packages (PostgreSQL, Chromium)
that ``.ci/run`` installs in the background meanwhile: when ``TRAINKIT_CI_SYSTEM_PACKAGES``
names the file that install writes its exit status to, the slow part waits for it first.

The install does not byte-compile the environment (13,900 modules, about 110 s of CPU): on a
fresh install the suite compiles, on every core, the libraries that each of its processes
imports (:data:`COMPILED`, 4,500 modules); the others' modules compile when first imported. For
that, the suite's processes must write their ``.pyc`` files, so ``PYTHONDONTWRITEBYTECODE`` (set
in CI's environment) is dropped from their environment.

Both parts always run; the exit status is non-zero if either failed. Each part prints its wall
time against its budget, so CI's log shows both.
"""

from __future__ import annotations

import compileall
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script: tests/ is on the path, the repository is not
from tests.preloaded import shared_server  # noqa: E402  (standard library only)

# One pytest worker per core (two here), each test file kept on one worker: a file's module
# fixtures (a finished run that ten tests read) are made once.
# Files in tests/conftest.py's LONGEST_FIRST order, not pytest-xdist's (most tests first).
PARALLEL = ("--numprocesses=auto", "--maxprocesses=4", "--dist=loadfile", "--no-loadscope-reorder")
PARTS = (
    ("fast subset", "not slow and not server", 180),
    ("slow and server tests", "slow or server", None),  # None: the rest of WHOLE_BUDGET
)
# .ci/run: install and both parts (it exports TRAINKIT_CI_START, the epoch second it began)
WHOLE_BUDGET = 12 * 60
ALONE_REST = 7 * 60  # the rest, when the suite runs outside .ci/run
# what every test process imports, most of each: 4,500 modules, 25 s on 2 cores (uv's
# --compile-bytecode: all 13,900 of the environment, 60 s)
COMPILED = ("tensorflow", "keras", "mlflow", "tensorboard", "sqlalchemy", "hydra", "_pytest")


def ci_elapsed() -> float | None:
    """Seconds since .ci/run began, or None outside it."""
    start = os.environ.get("TRAINKIT_CI_START", "")
    return time.time() - int(start) if start.isdigit() else None


def rest_of_budget() -> int:
    elapsed = ci_elapsed()
    return ALONE_REST if elapsed is None else max(0, round(WHOLE_BUDGET - elapsed))


def counts(junit: Path) -> tuple[int, int, int]:
    """(passed, failed, skipped) from a pytest JUnit XML report; nothing if it is missing."""
    if not junit.exists():
        return 0, 0, 0
    suite = ET.parse(junit).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    total, skipped = int(suite.get("tests", 0)), int(suite.get("skipped", 0))
    failed = int(suite.get("failures", 0)) + int(suite.get("errors", 0))
    return total - failed - skipped, failed, skipped


def cpu_speed() -> str:
    """This machine's speed now: the CPU time of a fixed pure-Python loop (0.09-0.11 s on
    2026-11-28 at 09:40 UTC, when a 30 M-addition loop at module level took 6.2-7.6 s of CPU;
    that loop took 3.9-4.4 s two hours earlier). The budgets' figures mean little without it."""
    start = time.process_time()
    total = 0
    for i in range(1_000_000):
        total += i
    return f"a 1 M-addition Python loop took {time.process_time() - start:.2f} s of CPU"


def first_run() -> bool:
    """True when TensorFlow's modules have no ``.pyc`` yet (a fresh install)."""
    spec = importlib.util.find_spec("tensorflow")
    origin = spec.origin if spec else None
    return bool(origin) and not os.path.exists(importlib.util.cache_from_source(origin))


def byte_compile() -> None:
    """Compile :data:`COMPILED` on every core: a process that imports them first would compile
    them one by one, and the first few (the preloaded process, the pytest workers) side by side."""
    start = time.monotonic()
    for name in COMPILED:
        spec = importlib.util.find_spec(name)
        for folder in spec.submodule_search_locations if spec else ():
            compileall.compile_dir(folder, quiet=2, workers=os.cpu_count() or 1)
    seconds = time.monotonic() - start
    print(f"=== byte-compiled {', '.join(COMPILED)} in {seconds:.0f} s", flush=True)


def system_packages_ready(timeout: float = 20 * 60) -> bool:
    """Wait for .ci/run's background install of system packages; False (with its log) if it
    failed or never finished. True at once outside .ci/run."""
    path = os.environ.get("TRAINKIT_CI_SYSTEM_PACKAGES", "")
    if not path:
        return True
    status, start = Path(path), time.monotonic()
    while not status.exists() and time.monotonic() - start < timeout:
        time.sleep(1)
    waited = time.monotonic() - start
    code = status.read_text().strip() if status.exists() else "unfinished"
    if code == "0":
        print(f"=== system packages installed (waited {waited:.0f} s for them)", flush=True)
        return True
    log = Path(f"{path}.log")
    tail = log.read_text(errors="replace")[-3000:] if log.exists() else "(no log)"
    print(f"=== system packages: apt-get exited {code}; its log ends:\n{tail}", flush=True)
    return False


def main(argv: list[str]) -> int:
    status = 0
    times = []
    passed = failed = skipped = 0
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)  # see the module's docstring
    print(f"=== machine speed at the start: {cpu_speed()}", flush=True)
    if first_run():
        byte_compile()
    with tempfile.TemporaryDirectory(prefix="trainkit-suite-") as tmp, shared_server(tmp):
        for i, (name, marks, budget) in enumerate(PARTS):
            if i > 0 and not system_packages_ready():
                status = 1  # the tests that need them fail and say so; the others still run
            note = ""
            if budget is None:
                budget = rest_of_budget()
                note = (
                    f" (what was left of .ci/run's {WHOLE_BUDGET} s when it started)"
                    if ci_elapsed() is not None
                    else " (12 minutes less an install and a fast subset)"
                )
            print(f"\n=== {name}: pytest -m {marks!r}", flush=True)
            # TRAINKIT_SUITE_REPORTS=DIR keeps each part's JUnit report (every test's time)
            junit = Path(os.environ.get("TRAINKIT_SUITE_REPORTS") or tmp) / f"part{i}.xml"
            command = [
                sys.executable,
                "-m",
                "pytest",
                "-m",
                marks,
                *PARALLEL,
                f"--junitxml={junit}",
                *argv,
            ]
            start = time.monotonic()
            code = subprocess.call(command, cwd=ROOT)
            seconds = time.monotonic() - start
            times.append(seconds)
            # pytest's 5 is "no test collected": not a failure of a part that may be empty.
            if code not in (0, 5):
                status = code or 1
            verdict = "within" if seconds <= budget else "OVER"
            print(
                f"=== {name}: {seconds:.0f} s, {verdict} its budget of {budget} s{note}",
                flush=True,
            )
            p, f, k = counts(junit)
            passed, failed, skipped = passed + p, failed + f, skipped + k
    print(f"=== machine speed at the end: {cpu_speed()}", flush=True)
    print(f"=== whole suite: {sum(times):.0f} s of tests", flush=True)
    whole = ci_elapsed()
    if whole is not None:
        verdict = "within" if whole <= WHOLE_BUDGET else "OVER"
        print(
            f"=== .ci/run: {whole:.0f} s with the install, {verdict} its budget of "
            f"{WHOLE_BUDGET} s",
            flush=True,
        )
    if status and not failed:
        failed = 1  # pytest itself failed (an error before any test ran): count it
    print(f"suite: {passed} passed, {failed} failed, {skipped} skipped", flush=True)
    return status


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
