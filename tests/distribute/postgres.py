"""A private PostgreSQL cluster on 127.0.0.1 for a test: ``initdb`` + ``pg_ctl`` in a temporary
folder, run as an unprivileged user (PostgreSQL refuses to run as root; CI runs as root, so
the ``postgres`` user of Debian's package runs it there, through ``runuser``)."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path


def postgres_bin() -> Path | None:
    """The folder of ``initdb`` and ``pg_ctl`` (Debian keeps them out of PATH), if installed."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


@dataclass
class Postgres:
    """A cluster with a ``mlflow`` superuser (trust auth on 127.0.0.1) and a ``mlflow`` database."""

    port: int
    root: Path
    user: str | None  # the OS user that runs the server when we are root
    binaries: Path | None = None

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def uri(self) -> str:
        return f"postgresql+psycopg://mlflow@127.0.0.1:{self.port}/mlflow"

    def _run(self, *command: str | Path, timeout: float = 120) -> None:
        prefix = ["runuser", "-u", self.user, "--"] if self.user else []
        done = subprocess.run(
            [*prefix, *map(str, command)], capture_output=True, text=True, timeout=timeout
        )
        if done.returncode != 0:
            log = self.root / "postgres.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"{command[0]} failed: {done.stdout}{done.stderr}{tail}")

    @classmethod
    def start(cls, port: int) -> Postgres:
        binaries = postgres_bin()
        if binaries is None:
            raise RuntimeError("PostgreSQL is not installed: apt-get install postgresql")
        user = None
        if os.geteuid() == 0:
            user = "postgres" if _has_user("postgres") else "nobody"
        # Under /tmp itself: pytest's folders are private to root, the server user must get in.
        root = Path(tempfile.mkdtemp(prefix="trainkit-pg-", dir="/tmp"))
        if user:
            entry = pwd.getpwnam(user)
            os.chown(root, entry.pw_uid, entry.pw_gid)
        cluster = cls(port, root, user, binaries)
        # --no-sync and fsync=off: a throwaway cluster needs no durability, and MLflow's
        # migrations (a few hundred DDL commits) then take a fraction of the time.
        cluster._run(
            binaries / "initdb", "-D", cluster.data, "-U", "mlflow", "-A", "trust", "--no-sync"
        )
        cluster._run(
            binaries / "pg_ctl",
            "-D",
            cluster.data,
            "-l",
            root / "postgres.log",
            "-o",
            f"-p {port} -k {root} -c listen_addresses=127.0.0.1"
            " -c fsync=off -c synchronous_commit=off -c full_page_writes=off",
            "-w",
            "start",
        )
        import psycopg

        with psycopg.connect(
            f"host=127.0.0.1 port={port} user=mlflow dbname=postgres", autocommit=True
        ) as connection:
            connection.execute("CREATE DATABASE mlflow")
        return cluster

    def stop(self) -> None:
        try:
            self._run(
                Path(self.binaries or "") / "pg_ctl", "-D", self.data, "-m", "fast", "-w", "stop"
            )
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def _has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True
