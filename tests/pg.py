"""A throwaway PostgreSQL cluster for the lake tests: initdb into a temporary directory, pg_ctl on
a free 127.0.0.1 port, trust authentication, removed at the end.

PostgreSQL refuses to run as root: when the tests run as root, every binary runs as the
``postgres`` user (``runuser``) in a directory that user owns. The binaries are looked up in
``/usr/lib/postgresql/<N>/bin`` (Debian, not on PATH) and then on PATH; without them the lake
tests are skipped, unless ``USER_METRICS_REQUIRE_POSTGRES=1`` (CI) makes that a failure.
fsync stays on: the lake's durability is part of what the tests claim.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from user_metrics.stats import Stats
from user_metrics.store.lake import Lake

RUN_AS = "postgres"
START_TIMEOUT_S = 60.0


def binaries() -> Path | None:
    """The directory of initdb and pg_ctl (the newest Debian version first), or None."""
    for found in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version, reverse=True):
        if os.access(os.path.join(found, "initdb"), os.X_OK):
            return Path(found)
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


def _version(path: str) -> int:
    part = Path(path).parent.name
    return int(part) if part.isdigit() else 0


def missing_reason() -> str | None:
    """Why no cluster can be started here (None: it can)."""
    if binaries() is None:
        return "PostgreSQL's initdb/pg_ctl not found (apt-get install postgresql)"
    if os.geteuid() == 0:
        try:
            import pwd

            pwd.getpwnam(RUN_AS)
        except KeyError:
            return f"running as root and there is no {RUN_AS!r} user to run PostgreSQL as"
    return None


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgCluster:
    """One PostgreSQL server in a temporary directory; ``new_database`` gives a libpq catalog string."""

    def __init__(self, base: str | Path | None = None, settings: dict[str, str] | None = None) -> None:
        found = binaries()
        if found is None:
            raise RuntimeError(missing_reason() or "no PostgreSQL")
        self.bin = found
        self.root = Path(tempfile.mkdtemp(prefix="um-pg-", dir=base))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = free_port()
        self.user = RUN_AS if os.geteuid() == 0 else os.environ.get("USER") or "postgres"
        self._databases = 0
        self.settings = settings or {}  # extra server settings (-c name=value), e.g. for benchmarks
        if os.geteuid() == 0:
            import pwd

            entry = pwd.getpwnam(RUN_AS)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", self.user, "-E", "UTF8", "--no-locale")
        self.start()

    def _command(self, program: str, *args: str) -> list[str]:
        command = [str(self.bin / program), *args]
        if os.geteuid() == 0:
            return ["runuser", "-u", RUN_AS, "--", *command]
        return command

    def _run(self, program: str, *args: str) -> str:
        done = subprocess.run(
            self._command(program, *args), capture_output=True, text=True, timeout=120, cwd=self.root
        )
        if done.returncode:
            raise RuntimeError(f"{program} failed ({done.returncode}): {done.stdout}{done.stderr}")
        return done.stdout

    def start(self) -> None:
        """Start the server (its port stays the same across restarts) and wait until it answers."""
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='{self.root}'"
        options += "".join(f" -c {name}={value}" for name, value in self.settings.items())
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "-t", "60", "start"
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            with contextlib.suppress(RuntimeError):
                self.sql("postgres", "SELECT 1")
                return
            time.sleep(0.2)
        raise RuntimeError(f"PostgreSQL did not answer on port {self.port}: {self.log.read_text()[-2000:]}")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast``: active connections are closed)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def restart(self) -> None:
        self.stop()
        self.start()

    def kill(self) -> None:
        """SIGKILL the postmaster (a crash); ``start`` brings it back through recovery."""
        pid = int((self.data / "postmaster.pid").read_text().splitlines()[0])
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        # Its backends stop once they notice the postmaster is gone; pg_ctl start then recovers.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and _listening(self.port):
            time.sleep(0.1)

    def sql(self, database: str, statement: str) -> str:
        """Run ``statement`` through psql; its output (unaligned, tuples only)."""
        return self._run(
            "psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user, "-d", database,
            "-v", "ON_ERROR_STOP=1", "-At", "-c", statement,
        )  # fmt: skip

    def new_database(self, name: str | None = None) -> str:
        """Create a database; its libpq catalog string."""
        self._databases += 1
        name = name or f"lake{self._databases}"
        self.sql("postgres", f'CREATE DATABASE "{name}"')
        return self.catalog(name)

    def catalog(self, database: str) -> str:
        return f"host=127.0.0.1 port={self.port} dbname={database} user={self.user}"

    def cleanup(self) -> None:
        """Stop the server (if running) and remove its directory."""
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


# ---- pytest fixtures (a plugin of tests/conftest.py, so every test folder can use them) -------


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    """One throwaway PostgreSQL server for the session (skipped when there is none, failed when
    USER_METRICS_REQUIRE_POSTGRES=1)."""
    reason = missing_reason()
    if reason is not None:
        if os.environ.get("USER_METRICS_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"USER_METRICS_REQUIRE_POSTGRES=1 but {reason}")
        pytest.skip(reason)
    cluster = PgCluster()
    try:
        yield cluster
    finally:
        cluster.cleanup()


@dataclass(frozen=True)
class LakeCatalog:
    """A fresh lake for one test: its catalog string (a new database) and an empty data path."""

    catalog: str
    data_path: str
    cluster: PgCluster


@pytest.fixture
def lake_catalog(pg_cluster: PgCluster, tmp_path: Path) -> LakeCatalog:
    # A test that stops the server and then fails may leave it stopped: not every later test too.
    if not _listening(pg_cluster.port):
        pg_cluster.start()
    data = tmp_path / "lake-data"
    data.mkdir()
    return LakeCatalog(pg_cluster.new_database(), str(data), pg_cluster)


@pytest.fixture
def lake(lake_catalog: LakeCatalog) -> Iterator[Lake]:
    """A ``Lake`` over ``lake_catalog``, closed after the test."""
    opened = Lake(
        lake_catalog.catalog, lake_catalog.data_path, Stats(), memory_limit_mib=512, max_dimension_values=1000
    )
    yield opened
    opened.close()
