"""A real PostgreSQL server for the tests, started by the test run itself.

`initdb` and ``pg_ctl`` in a temporary directory, listening on a unix socket only (no TCP);
as the user ``postgres`` when the tests run as root (PostgreSQL refuses to run as root).
Fixtures (import them into a test module that needs them):

- ``postgres``: the session's server with ``fsync=off`` (fast; for tests that do not crash
  the machine's view of the disk), and ``pg``: the conninfo of a fresh database on it.
- ``postgres_fsync``: a second server with ``fsync=on``, for the crash tests.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

MISSING = (
    "the PostgreSQL server binaries (initdb, pg_ctl) were not found: `make test` installs "
    "Debian's postgresql package when they are missing (apt-get install postgresql)"
)


def bindir() -> Path:
    """Where initdb and pg_ctl are: `pg_config --bindir`, else /usr/lib/postgresql/*/bin
    (Debian's, newest first), else the PATH; `pytest.fail` if nowhere."""
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        found = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True)
        if found.returncode == 0 and found.stdout.strip():
            candidates.append(Path(found.stdout.strip()))
    debian = glob.glob("/usr/lib/postgresql/*/bin")
    debian.sort(
        key=lambda path: int(Path(path).parent.name) if Path(path).parent.name.isdigit() else 0
    )
    candidates.extend(Path(path) for path in reversed(debian))
    initdb = shutil.which("initdb")
    if initdb is not None:
        candidates.append(Path(initdb).resolve().parent)
    for candidate in candidates:
        if (candidate / "initdb").is_file() and (candidate / "pg_ctl").is_file():
            return candidate
    pytest.fail(MISSING, pytrace=False)


class PostgresServer:
    """One PostgreSQL cluster in a temporary directory, on a unix socket in it."""

    def __init__(self, *, fsync: bool) -> None:
        self.bin = bindir()
        self.fsync = fsync
        self.root = Path(tempfile.mkdtemp(prefix="trioserver-pg-"))
        self.data = self.root / "data"
        self.socket = self.root / "socket"
        self.log = self.root / "server.log"
        self.socket.mkdir()
        self.user: str | None = None  # run the binaries as this user (we are root)
        if os.geteuid() == 0:
            try:
                entry = pwd.getpwnam("postgres")
            except KeyError:
                pytest.fail(
                    "the tests run as root and there is no user 'postgres' to run the "
                    "PostgreSQL server as (Debian's postgresql package creates it)",
                    pytrace=False,
                )
            self.user = "postgres"
            for path in (self.root, self.socket):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        self._databases = itertools.count()
        self._run("initdb", "--no-sync", "-A", "trust", "-U", "postgres", "-E", "UTF8",
                  "--locale=C", "-D", str(self.data))  # fmt: skip
        self.start()

    def _run(self, program: str, *args: str) -> None:
        command = [str(self.bin / program), *args]
        if self.user is not None:
            command = ["runuser", "-u", self.user, "--", *command]
        done = subprocess.run(command, cwd=self.root, capture_output=True, text=True)
        if done.returncode != 0:
            log = self.log.read_text() if self.log.exists() else ""
            raise RuntimeError(
                f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout}{done.stderr}"
                f"\n{log[-3000:]}"
            )

    def start(self) -> None:
        """Start the server (after `initdb`, or after `stop`) and wait until it accepts."""
        options = (
            f"-c listen_addresses='' -k {self.socket} -c fsync={'on' if self.fsync else 'off'}"
        )
        self._run("pg_ctl", "start", "-w", "-D", str(self.data), "-l", str(self.log),
                  "-o", options)  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        """``pg_ctl stop -m mode``: ``immediate`` is a crash (recovery at the next start)."""
        self._run("pg_ctl", "stop", "-w", "-D", str(self.data), "-m", mode)

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def conninfo(self, dbname: str = "postgres") -> str:
        return f"host={self.socket} user=postgres dbname={dbname}"

    def create_database(self) -> str:
        """A fresh, empty database on this server: its conninfo."""
        import psycopg

        name = f"test_{next(self._databases)}"
        with psycopg.connect(self.conninfo(), autocommit=True) as db:
            db.execute(f"CREATE DATABASE {name} TEMPLATE template0 STRATEGY file_copy")
        return self.conninfo(name)

    def close(self) -> None:
        try:
            if self.running():
                self.stop("fast")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """The session's PostgreSQL server, ``fsync=off``."""
    server = PostgresServer(fsync=False)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def postgres_fsync() -> Iterator[PostgresServer]:
    """A PostgreSQL server with ``fsync=on``: what a crash must not lose is on disk."""
    server = PostgresServer(fsync=True)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def pg(postgres: PostgresServer) -> str:
    """The conninfo of a fresh database on the session's server."""
    return postgres.create_database()
