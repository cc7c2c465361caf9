"""``user-metrics demo``: a throwaway service filled with a month of realistic, seeded LLM traffic.

``run_demo`` starts the service on a temporary database, sends the demo to it (``demo_spans.py``),
waits until every request is stored, prints where to look and serves until SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TextIO

from user_metrics.app import App
from user_metrics.cli.demo_spans import DemoData, DemoError, send_demo_spans
from user_metrics.cli.demo_traffic import check_figures
from user_metrics.cli.process import LOG_FORMAT, invocation, stop_on_signals, wait_for
from user_metrics.cli.query_commands import render
from user_metrics.errors import InvalidInput
from user_metrics.query.anomalies import anomalies
from user_metrics.query.results import to_json
from user_metrics.query.totals import totals as query_totals
from user_metrics.query.users import users as query_users
from user_metrics.settings import load_settings


def wait_until_stored(app: App, data: DemoData, timeout: float) -> None:
    """Poll the store until it holds every request of ``data`` (spans may wait for an ancestor)."""
    deadline = time.monotonic() + timeout
    while True:
        con = app.node.reader()
        try:
            stored = query_totals(con, since=data.since).requests
        finally:
            con.close()
        if stored == data.requests:
            return
        if time.monotonic() > deadline:
            raise DemoError(
                f"{stored} of the {data.requests} demo requests were stored after {timeout:.0f} s"
            )
        time.sleep(0.05)


def _report(app: App, data: DemoData, db: Path, temporary: bool) -> str:
    """What the demo prints once everything is stored: figures, top users, where to look."""
    con = app.node.reader()
    try:
        totals = query_totals(con, since=data.since)
        page = query_users(con, since="30d", limit=15)
        unusual = anomalies(con)
    finally:
        con.close()
    url, grpc_address = app.api_url, app.grpc_address
    cli = invocation()
    lines = [
        f"Sent {data.spans:,} spans through the OpenTelemetry SDK in {data.send_seconds:.1f} s: "
        f"{data.requests:,} LLM requests ({data.errors} errors) of {len(data.users)} users over "
        f"{data.distinct_days} days, ${totals.cost_usd:.2f} in all; every request is stored.",
        f"Database: {db}" + (" (temporary: deleted when the demo stops)" if temporary else ""),
        "",
        "Top users by cost, last 30 days:",
        render("users", to_json(page), "table"),
        f"Unusual users in the last hour (the demo's runaway agent belongs to {data.spiking_user}):",
        render("anomalies", to_json(unusual), "table"),
        f"Dashboard:  {url}/",
        f"HTTP API:   {url}/api/v1/users   (also /api/v1/totals, /api/v1/anomalies, /metrics, /healthz)",
        f"OTLP/gRPC:  {grpc_address}   (and the gRPC query service)",
        f"OTLP/HTTP:  {app.otlp_http_url}/v1/traces",
        "",
        "Point your own application here too:",
        f"  OTEL_EXPORTER_OTLP_ENDPOINT=http://{grpc_address} OTEL_EXPORTER_OTLP_PROTOCOL=grpc",
        "",
        "Try:",
        f"  {cli} users --url {url} --sort=-requests --limit 10",
        f"  {cli} user {data.spiking_user} --url {url}",
        f"  {cli} anomalies --url {url}",
        f"  {cli} properties plan --url {url}",
        f"  {cli} timeseries --url {url} --bucket day --since 7d",
        f'  {cli} sql --url {url} "SELECT provider, count(*), sum(cost_usd) FROM requests GROUP BY 1"',
        f"  curl -s '{url}/api/v1/users?since=7d&limit=5'",
        "",
        "Serving until Ctrl-C.",
    ]
    return "\n".join(lines)


def run_demo(
    *,
    users: int = 36,
    requests: int = 3000,
    days: int = 30,
    seed: int = 1,
    api_listen: str = "127.0.0.1:0",
    grpc_listen: str = "127.0.0.1:0",
    http_listen: str = "127.0.0.1:0",
    keep_db: str | None = None,
    stop: threading.Event | None = None,
    out: TextIO | None = None,
) -> int:
    """Start the service on a new database, fill it with the demo, print where to look, serve until
    ``stop`` is set; then stop the service and delete the temporary directory."""
    out = out or sys.stdout
    stop = stop or threading.Event()
    check_figures(users, requests, days)  # before starting anything
    if keep_db and Path(keep_db).exists():
        raise InvalidInput(f"--keep-db: {keep_db} exists; the demo writes a new database")
    workdir = Path(tempfile.mkdtemp(prefix="user-metrics-demo-"))
    db = Path(keep_db).resolve() if keep_db else workdir / "demo.duckdb"
    try:
        # The user's USER_METRICS_* environment is ignored: the demo is a service of its own.
        flags = {
            "db": str(db),
            "grpc_listen": grpc_listen,
            "http_listen": http_listen,
            "api_listen": api_listen,
            "metrics_properties": ["plan", "feature"],
            "log_level": "warning",
        }
        app = App(load_settings(flags, environ={}))
        app.start()
        try:
            data = send_demo_spans(app.grpc_address, users=users, requests=requests, days=days, seed=seed)
            wait_until_stored(app, data, app.settings.attribution_window_seconds + 30)
            print(_report(app, data, db, keep_db is None), file=out, flush=True)
            wait_for(stop)
        finally:
            app.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print("Stopped." + ("" if keep_db else f" Deleted {workdir}."), file=out, flush=True)
    return 0


def demo(args: argparse.Namespace) -> int:
    """``user-metrics demo``: run_demo until SIGINT or SIGTERM."""
    logging.basicConfig(level=logging.WARNING, format=LOG_FORMAT, stream=sys.stderr)
    with stop_on_signals() as stop:
        return run_demo(
            users=args.users,
            requests=args.requests,
            days=args.days,
            seed=args.seed,
            api_listen=args.api_listen,
            grpc_listen=args.grpc_listen,
            http_listen=args.http_listen,
            keep_db=args.keep_db,
            stop=stop,
        )
