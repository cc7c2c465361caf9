"""Nodes in lake mode, run as an operator runs them: a reader-only `serve --no-ingest --lake` process
answering the HTTP API, gRPC queries, SQL and /metrics over the lake and refusing OTLP; a receiver
whose acknowledged spans reach the reader; the CLI's `--lake`. A real PostgreSQL (tests/pg.py)."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from conftest import scrape, spawn
from otlp import T0, chat, request, span
from pg import LakeCatalog, free_port
from senders import raw_export
from servers import PROCESS_TIMEOUT, call, cli

from user_metrics.app import App
from user_metrics.settings import Settings
from user_metrics.stats import Stats
from user_metrics.store.lake import Lake
from user_metrics.v1 import user_metrics_pb2 as pb
from user_metrics.v1.user_metrics_pb2_grpc import UserMetricsServiceStub

READER = re.compile(r"gRPC queries on (\S+); HTTP API on (\S+); reader-only node")
RECEIVER = re.compile(r"OTLP gRPC and queries on (\S+); OTLP/HTTP on (\S+); HTTP API on (\S+); database")
LAKE_LINE = re.compile(r"lake mode: catalog (.*), data (\S+); ingest (on|off); /metrics (renders|leaves out)")
PASSWORD = "not-a-real-one"  # trust authentication: PostgreSQL ignores it; the log must not show it
WAIT_S = 120.0  # a liveness bound: the lake's visibility delay on a loaded machine


def serve(
    cwd: Path, pattern: re.Pattern[str], *args: str
) -> tuple[subprocess.Popen[str], re.Match[str], str]:
    """`user-metrics serve ARGS` on free ports in ``cwd``: the process, its listening line's match
    and the lake line (read from the log before the process is handed back)."""
    command = [sys.executable, "-m", "user_metrics", "serve", "--api-listen", "127.0.0.1:0"]
    command += ["--grpc-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", *args]
    proc = spawn(command, stderr=subprocess.PIPE, text=True, cwd=cwd, env=dict(os.environ))
    assert proc.stderr is not None
    deadline = time.monotonic() + PROCESS_TIMEOUT
    seen: list[str] = []
    listening = None
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        seen.append(line)
        listening = listening or pattern.search(line)
        if listening and LAKE_LINE.search(line):
            return proc, listening, line
    proc.kill()
    raise AssertionError(f"server did not start: {''.join(seen)}{proc.stderr.read()}")


def stop(proc: subprocess.Popen[str]) -> str:
    """Stop a server as an operator does (SIGTERM); what it logged after its start."""
    proc.terminate()
    _, err = proc.communicate(timeout=PROCESS_TIMEOUT)
    assert proc.returncode == 0, err
    return err


def families(api_url: str) -> dict[str, Any]:
    return {family.name: family for family in scrape(api_url)}


def value(found: dict[str, Any], name: str) -> float:
    return sum(s.value for s in found[name].samples if s.name in (name, name + "_total"))


def sql(api_url: str, query: str) -> tuple[int, Any]:
    status, answer, _ = call(api_url, "POST", "/api/v1/sql", {"sql": query})
    return status, answer


def test_a_reader_only_node_serves_the_lake_and_refuses_spans(
    lake_catalog: LakeCatalog, tmp_path: Path
) -> None:
    """No file, no OTLP; the HTTP API, gRPC queries, SQL (nothing outside the lake) and the store's
    /metrics families over the lake; plan prices and revenue imports (CLI --lake) written to it."""
    catalog = f"{lake_catalog.catalog} password={PASSWORD}"
    http_port = free_port()
    proc, listening, lake_line = serve(
        tmp_path,
        READER,
        "--http-listen",
        f"127.0.0.1:{http_port}",
        "--no-ingest",
        "--lake",
        catalog,
        "--lake-data",
        lake_catalog.data_path,
        "--plan-property",
        "plan",
        "--plan-prices",
        "pro=20/month",
    )
    grpc_target, api_url = listening.groups()
    try:
        assert PASSWORD not in lake_line and "password=***" in lake_line and "ingest off" in lake_line
        assert not list(tmp_path.glob("*.duckdb*"))  # no local database file at all
        with pytest.raises(ConnectionRefusedError):  # no OTLP/HTTP listener
            socket.create_connection(("127.0.0.1", http_port), timeout=10).close()
        status, health, _ = call(api_url, "GET", "/healthz")
        assert (status, health["status"], health["plan_property"]) == (200, "ok", "plan")

        # Revenue imported into the lake by the CLI while the node serves it; the node reads it.
        rows = tmp_path / "rows.json"
        rows.write_text(json.dumps([{"id": "r1", "user_id": "u1", "amount": "12", "at": "2026-11-02"}]))
        done = cli("revenue", "import", str(rows), "--lake", catalog)
        assert done.returncode == 0 and done.stdout.startswith("1 records imported"), done.stderr
        status, listed, _ = call(api_url, "GET", "/api/v1/revenue")
        assert (status, [r["id"] for r in listed["records"]]) == (200, ["r1"])
        prices = sql(api_url, "SELECT property, value, amount_usd::VARCHAR, per FROM plan_prices")
        assert prices[1]["rows"] == [["plan", "pro", "20.000000000", "month"]], prices
        assert sql(api_url, "SELECT count(*) FROM requests")[1]["rows"] == [[0]]
        status, refused = sql(api_url, "SELECT * FROM read_csv('/etc/passwd')")
        assert status == 400 and "not allowed" in refused["error"]

        with grpc.insecure_channel(grpc_target) as channel:
            totals = UserMetricsServiceStub(channel).GetTotals(pb.GetTotalsRequest(), timeout=30)
            assert totals.requests == 0
            with pytest.raises(grpc.RpcError) as refused_export:
                raw_export(grpc_target, request([span(chat())]).SerializeToString())
            assert refused_export.value.code() == grpc.StatusCode.UNIMPLEMENTED

        found = families(api_url)
        assert {"llm_requests", "llm_user_requests", "user_metrics_lake_commits"} <= set(found)
        assert value(found, "user_metrics_lake_commits") >= 1  # the plan prices, in a lake transaction

        # The CLI reads the lake like a file; --lake goes with neither --db nor --url.
        answer = cli("revenue", "list", "--lake", catalog, "--format", "json")
        assert json.loads(answer.stdout)["total"] == 1, answer.stderr
        both = cli("totals", "--lake", catalog, "--db", str(tmp_path / "x.duckdb"))
        assert both.returncode == 2 and "not allowed with argument" in both.stderr
    finally:
        stopped = stop(proc)
    assert PASSWORD not in stopped


def test_a_receivers_acknowledged_spans_reach_the_reader(lake_catalog: LakeCatalog, tmp_path: Path) -> None:
    """A receiver in lake mode acknowledges from its own file and ships to the lake; every reader
    (the reader-only node, the receiver's own API, the CLI) then answers the same totals. The
    store's /metrics families come from the reader only (lake_store_metrics auto), the receiver
    renders its shipping figures."""
    catalog = lake_catalog.catalog
    reader, reader_listening, _ = serve(
        tmp_path, READER, "--no-ingest", "--lake", catalog, "--lake-data", lake_catalog.data_path
    )
    receiver, listening, lake_line = serve(
        tmp_path,
        RECEIVER,
        "--db",
        str(tmp_path / "r.duckdb"),
        "--lake",
        catalog,
        "--lake-ship-interval",
        "0.2",
        "--metrics-refresh-seconds",
        "0",
    )
    target, _, receiver_api = listening.groups()
    reader_api = reader_listening.group(2)
    try:
        assert "ingest on" in lake_line and "leaves out" in lake_line
        users = ["u1", "u2", "u3", "u1", "u2"]
        raw_export(
            target,
            request([span(chat(user), start=T0 + i) for i, user in enumerate(users)]).SerializeToString(),
        )
        window = "?since=2026-11-01T00:00:00Z&until=2026-12-01T00:00:00Z"
        deadline = time.monotonic() + WAIT_S
        while True:
            _, totals, _ = call(reader_api, "GET", "/api/v1/totals" + window)
            if totals["requests"] == len(users) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert (totals["requests"], totals["users"]) == (5, 3), totals
        assert call(receiver_api, "GET", "/api/v1/totals" + window)[1] == totals  # it reads the lake too
        done = cli(
            "totals", "--lake", catalog, "--since", "2026-11-01", "--until", "2026-12-01", "--format", "json"
        )
        assert json.loads(done.stdout)["requests"] == 5, done.stderr

        on_reader = families(reader_api)
        assert value(on_reader, "llm_requests") == 5
        while True:  # the outbox is emptied just after the lake's commit
            on_receiver = families(receiver_api)
            if value(on_receiver, "user_metrics_lake_outbox_rows") == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert not [name for name in on_receiver if name.startswith("llm_")]
        assert value(on_receiver, "user_metrics_lake_outbox_rows") == 0
        assert value(on_receiver, "user_metrics_lake_shipped_rows") == 5
        assert value(on_receiver, "user_metrics_spans_stored") == 5
    finally:
        stop(receiver)
        stop(reader)


def test_stopping_a_receiver_ships_what_is_left(lake_catalog: LakeCatalog, tmp_path: Path) -> None:
    """With an hour between ships, what an App acknowledged reaches the lake when it stops; while
    shipping lags past lake_max_lag, /healthz's health says so."""
    settings = Settings(
        db=str(tmp_path / "r.duckdb"),
        lake=lake_catalog.catalog,
        lake_data=lake_catalog.data_path,
        lake_ship_interval=3600,
        lake_max_lag=7200,
        grpc_listen="127.0.0.1:0",
        api_listen="127.0.0.1:0",
        http_listen="127.0.0.1:0",
    )
    app = App(settings)
    app.start()
    try:
        assert app.node.health() is None and app.node.shipper is not None
        behind = app.node.shipper
        lag = behind.lag_seconds
        behind.lag_seconds = lambda: 7201.0  # type: ignore[method-assign]  # as if PostgreSQL were down
        assert "shipping is 7201 s behind (lake_max_lag 7200 s)" in str(app.node.health())
        behind.lag_seconds = lag  # type: ignore[method-assign]
        raw_export(
            app.grpc_address,
            request([span(chat(f"u{i}"), start=T0 + i) for i in range(7)]).SerializeToString(),
        )
    finally:
        app.stop()
    lake = Lake(lake_catalog.catalog, None, Stats(), memory_limit_mib=256, max_dimension_values=1000)
    try:
        with lake.reader() as con:
            assert con.execute("SELECT count(*), count(DISTINCT user_id) FROM requests").fetchall() == [
                (7, 7)
            ]
    finally:
        lake.close()
