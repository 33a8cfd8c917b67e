"""Job processes for the tests without paying for their imports each time.

Every ``python run.py …`` a test starts spends most of its CPU importing TensorFlow, Keras,
MLflow and Hydra (~13 s of a 3-step job's ~30 s here). :class:`Popen` is ``subprocess.Popen``
for such commands with that cost paid once per test worker (once per suite under
``tests/run_suite.py``, whose process serves all its workers): a *preloaded* process imports the
libraries once (and runs no TensorFlow op: TensorFlow's runtime starts at the first op, so a
fork before it is safe), then forks a child for each command. The child is a real process of
its own (its pid takes signals, it exits with the command's status) and runs the script or
module as ``python`` would: ``sys.argv``, ``sys.path``, the environment, the working
directory, the standard streams and the signal handlers are the command's, and at its end it
runs the interpreter's shutdown (threads joined, ``atexit``, streams flushed).

What a fork cannot give is what the libraries read while importing: TensorFlow's and Keras's
import-time environment (``KERAS_HOME``, ``TF_ENABLE_ONEDNN_OPTS``, …) and whatever the process
prints while importing them. Tests of those (the start-up chatter, the Keras cache, the
README's first command) start plain processes. Shell commands (the documented ones) reach the
preloaded process through :func:`python_on_path`.

:class:`Popen` overrides three private methods of Python 3.11's ``subprocess.Popen``
(``_execute_child``, ``_try_wait``, ``_internal_poll``): the public ones (``wait``, ``poll``,
``communicate``, ``send_signal``, ``kill``, the context manager) then work unchanged.

``TRAINKIT_TEST_PRELOADED=0`` makes :class:`Popen` a plain ``subprocess.Popen``.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# imported once in the preloaded process (no module that runs a TensorFlow op on import)
PRELOAD = (
    "numpy",
    "tensorflow",
    "keras",
    "hydra",
    "omegaconf",
    "mlflow",
    "mlflow.store.tracking.sqlalchemy_store",
    "rich.console",
    "PIL.Image",
    "h5py",
)
ENABLED = os.environ.get("TRAINKIT_TEST_PRELOADED", "1") != "0"


# -- the preloaded process ----------------------------------------------------------------------


def _serve(path: str) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("MPLBACKEND", "Agg")  # read when matplotlib is imported, here
    import importlib

    for name in PRELOAD:
        importlib.import_module(name)
    base_path = [p for p in sys.path[1:] if p not in _pythonpath(os.environ)]
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(f"{path}.tmp")
    listener.listen(64)
    os.rename(f"{path}.tmp", path)  # the path appears once it takes connections
    print("ready", flush=True)  # the client waits for this line
    waiting: dict[int, socket.socket] = {}  # child pid -> the connection that started it
    owned: dict[socket.socket, int] = {}  # a client whose end ends its child (the shim's)
    while True:
        ready, _, _ = select.select([listener, sys.stdin, *owned], [], [], 0.05)
        if sys.stdin in ready and not sys.stdin.buffer.read1(1):
            return  # the test worker ended
        for connection in set(ready) & set(owned):
            os.kill(owned.pop(connection), signal.SIGKILL)  # its client was killed
        if listener in ready:
            connection, _ = listener.accept()
            try:
                request, fds = _receive(connection)
            except (OSError, ValueError):  # a client that died mid-request: not ours to end
                connection.close()
                continue
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                listener.close()
                for other in waiting.values():
                    other.close()
                _child(request, fds, connection, base_path)
            for fd in fds:
                os.close(fd)
            connection.sendall(json.dumps({"pid": pid}).encode() + b"\n")
            waiting[pid] = connection
            if request.get("owned"):
                owned[connection] = pid
        while waiting:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            connection = waiting.pop(pid, None)
            if connection is not None:
                owned.pop(connection, None)
                with contextlib.suppress(OSError):  # the test may have given up on it
                    connection.sendall(json.dumps({"status": status}).encode() + b"\n")
                connection.close()


def _receive(connection: socket.socket) -> tuple[dict[str, Any], list[int]]:
    """A request: one JSON line, the child's three standard streams passed with it."""
    data, fds, _, _ = socket.recv_fds(connection, 1 << 16, 3)
    while not data.endswith(b"\n"):
        chunk = connection.recv(1 << 16)
        if not chunk:
            raise ConnectionError("a request ended early")
        data += chunk
    return json.loads(data), list(fds)


def _pythonpath(env: dict[str, str]) -> list[str]:
    return [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]


def _child(request: dict[str, Any], fds: list[int], connection: socket.socket, base: list[str]):
    """In the forked child: become ``python ARGS`` and never return."""
    code = 1
    try:
        connection.close()
        if request["new_session"]:
            os.setsid()
        for target, fd in zip((0, 1, 2), fds, strict=True):
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for number in (signal.SIGTERM, signal.SIGCHLD, signal.SIGPIPE):
            signal.signal(number, signal.SIG_DFL)
        import random

        import numpy as np

        random.seed()
        np.random.seed()
        _run(request["args"][1:], base)
        code = 0
    except SystemExit as stop:
        code = _exit_code(stop.code)
    except KeyboardInterrupt:
        traceback.print_exc()
        code = -signal.SIGINT
    except BaseException:  # noqa: BLE001 - reported as python reports it
        traceback.print_exc()
        code = 1
    try:
        threading._shutdown()  # type: ignore[attr-defined]  # what the interpreter does at exit
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:  # noqa: BLE001
        traceback.print_exc()
    if code < 0:
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    os._exit(code)


def _exit_code(code: Any) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def _run(args: list[str], base: list[str]) -> None:
    import runpy

    path = _pythonpath(os.environ)
    if args[:1] == ["-m"]:
        sys.argv = [args[1], *args[2:]]
        sys.path[:] = [os.getcwd(), *path, *base]
        runpy.run_module(args[1], run_name="__main__", alter_sys=True)
    else:
        script = os.path.realpath(args[0])  # python's sys.path[0] follows a link
        sys.argv = list(args)
        sys.path[:] = [os.path.dirname(script), *path, *base]
        runpy.run_path(args[0], run_name="__main__")


# -- the tests' side ----------------------------------------------------------------------------


SHARED = "TRAINKIT_TEST_PRELOADED_SERVER"  # set by shared_server: one for every worker


def _start(path: str, stdout: Any) -> subprocess.Popen:
    """A preloaded process serving at ``path``; it ends when its standard input closes."""
    return subprocess.Popen(
        [sys.executable, "-m", "tests.preloaded", path],
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="2"),
        stdin=subprocess.PIPE,
        stdout=stdout,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


@contextlib.contextmanager
def shared_server(folder: str) -> Iterator[None]:
    """One preloaded process for every process started inside the block (``SHARED`` in the
    environment they inherit): ``tests/run_suite.py`` shares one between all the pytest workers
    of both its parts, instead of one per worker and part (about 10 s of CPU each). It imports
    while pytest collects; :class:`_Shared` waits for its socket."""
    if not ENABLED:
        yield
        return
    path = os.path.join(folder, "preloaded.socket")
    server = _start(path, stdout=subprocess.DEVNULL)
    os.environ[SHARED] = path
    try:
        yield
    finally:
        os.environ.pop(SHARED, None)
        server.stdin.close()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()


class _Shared:
    """The preloaded process that ``tests/run_suite.py`` started for all its pytest workers
    (it imports while pytest collects; its socket appears when it is ready)."""

    def __init__(self, path: str, timeout: float = 300) -> None:
        self.path, self.folder = path, os.path.dirname(path)
        deadline = time.monotonic() + timeout
        while not os.path.exists(path):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the shared preloaded process never opened {path}")
            time.sleep(0.05)

    def poll(self) -> int | None:
        return None if os.path.exists(self.path) else 1


class _Server:
    """This test worker's preloaded process, started at the first command (or the suite's
    shared one, see :class:`_Shared`)."""

    lock = threading.Lock()
    current: _Server | _Shared | None = None

    def __init__(self) -> None:
        self.folder = tempfile.mkdtemp(prefix="trainkit-preloaded-")
        atexit.register(shutil.rmtree, self.folder, ignore_errors=True)  # socket, shims
        self.path = os.path.join(self.folder, "socket")
        self.process = _start(self.path, stdout=subprocess.PIPE)
        line = self.process.stdout.readline()
        if line.strip() != b"ready":
            raise RuntimeError("the preloaded test process did not start")

    def poll(self) -> int | None:
        return self.process.poll()

    @classmethod
    def get(cls) -> _Server | _Shared:
        with cls.lock:
            if cls.current is None or cls.current.poll() is not None:
                shared = os.environ.get(SHARED, "")
                cls.current = _Shared(shared) if shared and cls.current is None else cls()
            return cls.current


def _preloadable(argv: list[str] | None) -> bool:
    """``python SCRIPT.py …`` or ``python -m MODULE …`` with this interpreter."""
    if not argv or len(argv) < 2 or argv[0] != sys.executable:
        return False
    return (argv[1] == "-m" and len(argv) > 2) or argv[1].endswith(".py")


class Popen(subprocess.Popen):
    """``subprocess.Popen`` for ``[sys.executable, script_or_-m, …]``: forked from the
    preloaded process (see the module's docstring). Other commands run as usual."""

    def __init__(self, args: Any, *rest: Any, **kwargs: Any) -> None:
        self._preloaded: socket.socket | None = None
        self._buffer = b""
        super().__init__(args, *rest, **kwargs)

    def _execute_child(self, args, executable, preexec_fn, close_fds, pass_fds, cwd, env,
                       startupinfo, creationflags, shell, p2cread, p2cwrite, c2pread, c2pwrite,
                       errread, errwrite, *rest):  # fmt: skip
        argv = [str(a) for a in args] if isinstance(args, (list, tuple)) else None
        if not (ENABLED and _preloadable(argv) and not shell and not executable):
            return super()._execute_child(args, executable, preexec_fn, close_fds, pass_fds,
                                          cwd, env, startupinfo, creationflags, shell, p2cread,
                                          p2cwrite, c2pread, c2pwrite, errread, errwrite,
                                          *rest)  # fmt: skip
        start_new_session = rest[-2]  # (..., umask, start_new_session, process_group)
        devnull = os.open(os.devnull, os.O_RDWR)
        try:
            fds = [
                p2cread if p2cread != -1 else devnull,
                c2pwrite if c2pwrite != -1 else sys.__stdout__.fileno(),
                errwrite if errwrite != -1 else sys.__stderr__.fileno(),
            ]
            request = {
                "args": argv,
                "cwd": str(cwd or os.getcwd()),
                "env": dict(env if env is not None else os.environ),
                "new_session": bool(start_new_session),
            }
            connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            connection.connect(_Server.get().path)
            socket.send_fds(connection, [json.dumps(request).encode() + b"\n"], fds)
            self.pid = self._message(connection, None)["pid"]
            self._preloaded = connection
            self._child_created = True
        finally:
            os.close(devnull)
            self._close_pipe_fds(p2cread, p2cwrite, c2pread, c2pwrite, errread, errwrite)

    def _message(self, connection: socket.socket, timeout: float | None) -> dict | None:
        while b"\n" not in self._buffer:
            if timeout is not None and not select.select([connection], [], [], timeout)[0]:
                return None
            chunk = connection.recv(4096)
            if not chunk:
                raise RuntimeError("the preloaded test process ended")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return json.loads(line)

    def _try_wait(self, wait_flags: int) -> tuple[int, int]:
        if self._preloaded is None:
            return super()._try_wait(wait_flags)
        message = self._message(self._preloaded, 0 if wait_flags & os.WNOHANG else None)
        if message is None:
            return 0, 0
        self._preloaded.close()
        return self.pid, message["status"]

    def _internal_poll(self, _deadstate: Any = None, **_: Any) -> int | None:
        if self._preloaded is None:
            return super()._internal_poll(_deadstate=_deadstate)
        if self.returncode is None and self._waitpid_lock.acquire(False):
            try:
                if self.returncode is None:
                    pid, status = self._try_wait(os.WNOHANG)
                    if pid == self.pid:
                        self._handle_exitstatus(status)
            finally:
                self._waitpid_lock.release()
        return self.returncode


def python_on_path() -> dict[str, str]:
    """Environment entries that make ``python`` (and ``python3``) in a shell command run
    through this worker's preloaded process: a folder of small scripts (see :func:`shim`)
    first on ``PATH``. ``tensorboard`` there is ``python -m tensorboard.main``, what the
    installed ``tensorboard`` script runs (``tensorboard.main:run_main``), through that
    ``python``: it imports TensorFlow at its start, 8-9 s of CPU a start here. Empty when
    preloading is off."""
    if not ENABLED:
        return {}
    server = _Server.get()
    folder = Path(server.folder) / "bin"
    python = (
        f"#!{sys.executable} -S\n"
        f"import sys\nsys.path.insert(0, {str(ROOT)!r})\n"
        f"from tests.preloaded import shim\nshim({server.path!r})\n"
    )
    scripts = {
        "python": python,
        "python3": python,
        "tensorboard": f'#!/bin/sh\nexec "{folder / "python"}" -m tensorboard.main "$@"\n',
    }
    with _Server.lock:
        if not (folder / "tensorboard").exists():
            folder.mkdir(exist_ok=True)  # a shared server's folder: another worker may race
            for name, text in scripts.items():  # tensorboard last: it says all are there
                script = folder / f"{name}.{os.getpid()}"
                script.write_text(text)
                script.chmod(0o755)
                script.replace(folder / name)
    return {"PATH": f"{folder}{os.pathsep}{os.environ.get('PATH', '')}"}


def shim(path: str) -> None:
    """``python ARGS`` for a shell: a command :class:`Popen` would preload runs in a child of the
    preloaded process at ``path`` on this process's standard streams, with this process's
    environment and working directory; this process passes it the signals it gets and exits
    as it did (killed, this process's end kills it: a shell's timeout still ends it). Any other
    command is handed to the real interpreter."""
    argv = [sys.executable, *sys.argv[1:]]
    if not _preloadable(argv):
        os.execv(sys.executable, argv)
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    connection.connect(path)
    request = {
        "args": argv,
        "cwd": os.getcwd(),
        "env": dict(os.environ),
        "new_session": False,
        "owned": True,
    }
    socket.send_fds(connection, [json.dumps(request).encode() + b"\n"], [0, 1, 2])
    answers = connection.makefile("rb")
    pid = json.loads(answers.readline())["pid"]
    for number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(number, lambda received, _frame: os.kill(pid, received))
    line = answers.readline()
    code = os.waitstatus_to_exitcode(json.loads(line)["status"]) if line else 1
    if code < 0:
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    sys.exit(code)


def run(
    *args: Any,
    timeout: float | None = None,
    check: bool = False,
    capture_output: bool = False,
    **kwargs: Any,
):
    """``subprocess.run`` through :class:`Popen`."""
    if capture_output:
        kwargs.update(stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    with Popen(*args, **kwargs) as process:
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except BaseException:
            process.kill()
            process.wait()
            raise
    done = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    if check:
        done.check_returncode()
    return done


if __name__ == "__main__":
    _serve(sys.argv[1])
