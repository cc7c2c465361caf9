"""Running `user-metrics` as a user would: `serve` processes on free ports, CLI commands, API calls."""

from __future__ import annotations

import http.client
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import duckdb
import pytest
from conftest import counters, spawn

from user_metrics.serve import grpc_api, http_api

# A liveness bound for a service process to start, or to end: generous, for a loaded machine
# (a start imports DuckDB, gRPC and the price data, and opens the database).
PROCESS_TIMEOUT = 120


LISTENING = re.compile(
    r"OTLP gRPC and queries on (\S+); OTLP/HTTP on (\S+); HTTP API on (\S+); database (\S+)"
)


def serve_command(db: Path, grpc_listen: str = "127.0.0.1:0") -> list[str]:
    """`user-metrics serve` on a file, on free ports unless told otherwise."""
    return [
        sys.executable,
        "-m",
        "user_metrics",
        "serve",
        "--db",
        str(db),
        "--grpc-listen",
        grpc_listen,
        "--api-listen",
        "127.0.0.1:0",
        "--http-listen",
        "127.0.0.1:0",
    ]


def start_server(
    db: Path, *extra: str, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[str], str]:
    """Run `user-metrics serve` on free ports; returns the process and its gRPC address."""
    proc, target, _ = start_server_with_api(db, *extra, env=env)
    return proc, target


def start_server_with_api(
    db: Path, *extra: str, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[str], str, str]:
    """Run `user-metrics serve` on free ports; returns the process, gRPC address and API URL."""
    proc, (target, _, api_url) = start_server_listening(db, *extra, env=env)
    return proc, target, api_url


def start_server_listening(
    db: Path, *extra: str, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[str], tuple[str, str, str]]:
    """Run `user-metrics serve`; returns the process and (gRPC address, OTLP/HTTP URL, API URL)."""
    proc = spawn(
        [*serve_command(db), *extra],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
    assert proc.stderr is not None
    deadline = time.monotonic() + PROCESS_TIMEOUT
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        match = LISTENING.search(line)
        if match:
            assert match.group(4) == str(db.resolve())
            return proc, (match.group(1), match.group(2), match.group(3))
    proc.kill()
    raise AssertionError(f"server did not start: {proc.stderr.read()}")


def cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "user_metrics", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
        cwd=cwd,
    )


CLIENT_TIMEOUT_S = 30.0


def call(app_url: str, method: str, path: str, body: Any = None) -> tuple[int, Any, http.client.HTTPResponse]:
    """One request with a JSON body (or none): the status, the JSON answer and the response."""
    url = urlsplit(app_url)
    conn = http.client.HTTPConnection(str(url.hostname), url.port, timeout=CLIENT_TIMEOUT_S)
    data = None if body is None else json.dumps(body)
    try:
        conn.request(method, path, data, {"Content-Type": "application/json"} if data else {})
        response = conn.getresponse()
        return response.status, json.loads(response.read()), response
    finally:
        conn.close()


def reads_limited(app_url: str) -> dict[str, float]:
    """user_metrics_reads_limited_total by limit, as scraped."""
    return counters(app_url, "user_metrics_reads_limited", "limit")


class SlowQuery:
    """Makes the HTTP API's and the gRPC service's ``users`` run a DuckDB query that only an interrupt
    ends, until the block ends."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.interrupted = threading.Event()
        self._ended = False
        self._running: list[duckdb.DuckDBPyConnection] = []
        self._lock = threading.Lock()

        def users(con: duckdb.DuckDBPyConnection, *args: Any, **kw: Any) -> Any:
            with self._lock:
                if self._ended:
                    raise AssertionError("the test is over")
                self._running.append(con)
            try:
                con.execute("SELECT count(*) FROM range(1_000_000_000_000)").fetchall()  # hours
            except duckdb.InterruptException:
                self.interrupted.set()
                raise
            finally:
                with self._lock:
                    self._running.remove(con)
            raise AssertionError("the query ended by itself")

        monkeypatch.setattr(http_api, "users", users)
        monkeypatch.setattr(grpc_api, "users", users)

    def __enter__(self) -> SlowQuery:
        return self

    def __exit__(self, *exc: object) -> None:
        # Interrupt what still runs, so that a server that never stops its queries can stop.
        while True:
            with self._lock:
                self._ended = True
                if not self._running:
                    return
                for con in self._running:
                    con.interrupt()
            time.sleep(0.05)
