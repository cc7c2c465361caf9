"""The reading commands of ``user-metrics``: users, user, requests, timeseries, properties, totals,
anomalies, coverage, statement, sql.

They find the data the way an operator expects: ``--url`` asks that server, ``--db`` reads that
file, ``--lake`` reads that lake (a PostgreSQL catalog string, as the ``lake`` setting); with
none, the configured server is asked first (while it runs it holds the file) and the configured
lake, else the configured file, is read when no server answers.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast
from zoneinfo import ZoneInfo

from user_metrics.cli import revenue_commands
from user_metrics.cli.coverage_table import coverage_text
from user_metrics.cli.revenue_commands import add_revenue_commands
from user_metrics.cli.statement_command import add_statement_command, render_statement, statement_pages
from user_metrics.client import RemoteClient, connect
from user_metrics.errors import Unavailable
from user_metrics.query.calendar import PERIODS
from user_metrics.query.results import (
    DEFAULT_VALUES,
    MAX_VALUES,
    PROFIT_FIELDS,
    SORTABLE_USER_FIELDS,
    USER_FIELDS,
    to_json,
)
from user_metrics.query.statement_csv import cell
from user_metrics.settings import ENV_PREFIX, load_settings, split_address

if TYPE_CHECKING:
    from user_metrics.serve.local_client import LocalClient

TOKEN_ENV = ENV_PREFIX + "TOKEN"
TZ_HELP = (
    "IANA time zone of calendar periods, instants without an offset, active days and buckets, e.g. "
    "Asia/Kolkata (default: the server's timezone setting; reading --db, the configured timezone)"
)
NO_USER = "(no user id)"
USER_TABLE = (
    "user_id",
    "requests",
    "errors",
    "cost_usd",
    "total_tokens",
    "active_days",
    "avg_latency_ms",
    "p95_latency_ms",
    "last_active",
)


def add_commands(commands: Any) -> None:
    """Register the reading subcommands on the top-level parser's subparsers."""
    located = argparse.ArgumentParser(add_help=False)
    where = located.add_argument_group("where to read")
    one = where.add_mutually_exclusive_group()
    one.add_argument("--db", metavar="PATH", help="read this DuckDB file (only while no server holds it)")
    one.add_argument("--url", metavar="URL", help="ask the server at this URL, e.g. http://127.0.0.1:9464")
    one.add_argument(
        "--lake",
        metavar="CATALOG",
        help="read this lake: its PostgreSQL catalog (as the lake setting), e.g. 'host=db dbname=lake'",
    )
    where.add_argument("--config", metavar="FILE", help="TOML config naming db and api_listen")
    where.add_argument(
        "--token",
        metavar="TOKEN",
        default=os.environ.get(TOKEN_ENV),
        help=f"token for the server (default ${TOKEN_ENV}, else the first configured read_tokens; for "
        "revenue import, the first ingest_tokens)",
    )
    where.add_argument(
        "--ca-file",
        metavar="PEM",
        help="verify the server's TLS with this (default: the configured tls_cert_file)",
    )
    where.add_argument(
        "--memory-limit-mib",
        type=int,
        metavar="MIB",
        help="DuckDB's memory limit when reading the file (default: the memory_limit_mib setting)",
    )
    common = argparse.ArgumentParser(add_help=False, parents=[located])
    shape = common.add_argument_group("output")
    shape.add_argument("--format", choices=("table", "json", "csv"), default="table", help="default: table")
    window = argparse.ArgumentParser(add_help=False)
    group = window.add_argument_group("window and filters")
    group.add_argument(
        "--since",
        help="30d, 24h, 90m, an ISO-8601 instant (without an offset: in --tz), or a calendar period "
        f"in --tz: {', '.join(PERIODS)} or a month like 2026-11 (then no --until) (default 30d)",
    )
    group.add_argument("--until", help="a duration or an instant (default now)")
    group.add_argument("--tz", metavar="ZONE", help=TZ_HELP)
    group.add_argument("--property", action="append", metavar="KEY=VALUE", help="repeatable, e.g. plan=pro")
    group.add_argument("--model")
    group.add_argument("--service")
    group.add_argument("--environment")
    parents = [common, window]

    users = commands.add_parser("users", parents=parents, help="per-user usage, one row per user")
    users.add_argument(
        "--sort",
        default="-cost_usd",
        help=f"field, '-' prefix for descending (write --sort=-requests): {', '.join(SORTABLE_USER_FIELDS)}",
    )
    users.add_argument("--limit", type=int, default=100)
    users.add_argument("--offset", type=int, default=0)
    users.add_argument("--search", metavar="TEXT", help="only users whose id contains TEXT (any case)")
    one = commands.add_parser("user", parents=parents, help="one user's usage and models")
    one.add_argument("user_id", metavar="ID")
    series = commands.add_parser(
        "timeseries", parents=parents, help="usage per hour, day, week or month, empty ones included"
    )
    series.add_argument("--user", metavar="ID", help="one user (default: the whole application)")
    series.add_argument(
        "--bucket",
        choices=("hour", "day", "week", "month"),
        default="day",
        help="hours, days, weeks (from Monday) or months of --tz (default day)",
    )
    recent = commands.add_parser("requests", parents=parents, help="one user's latest requests, newest first")
    recent.add_argument("user_id", metavar="ID")
    recent.add_argument("--limit", type=int, default=20, help="how many (default 20, at most 1000)")
    props = commands.add_parser(
        "properties", parents=parents, help="users and cost per value of a property; no KEY: the keys"
    )
    props.add_argument("key", metavar="KEY", nargs="?")
    props.add_argument(
        "--limit",
        type=int,
        default=DEFAULT_VALUES,
        help=f"most values, the costliest (default {DEFAULT_VALUES}, at most {MAX_VALUES:,})",
    )
    commands.add_parser("totals", parents=parents, help="the whole application in the window")
    unusual = commands.add_parser(
        "anomalies", parents=[common], help="users far from their own history or above the population"
    )
    unusual.add_argument("--since", help="start of the recent window (default: an hour before --until)")
    unusual.add_argument("--until", help="end of the recent window (default now)")
    unusual.add_argument("--tz", metavar="ZONE", help=TZ_HELP)
    unusual.add_argument("--history", default="7d", help="how far back the baseline reaches (default 7d)")
    # No default here: importing the detector for its constant would load DuckDB; the client's
    # default applies (tests/cli/test_cli_help.py keeps this help text true).
    unusual.add_argument("--threshold", type=float, help="robust z-score to flag (default 6)")
    covered = commands.add_parser(
        "coverage",
        parents=parents,
        help="per service and instrumentation scope: shares with user, session, cost; what is not read",
    )
    covered.add_argument(
        "--limit", type=int, default=20, help="most span names and keys per list and scope (default 20)"
    )
    add_statement_command(commands, [common])
    sql = commands.add_parser("sql", parents=[common], help="run one read-only SELECT")
    sql.add_argument("sql", metavar="QUERY")
    sql.add_argument("--limit", type=int, default=1000)
    add_revenue_commands(commands, located)


def _local(path: str | None, memory_limit_mib: int, timezone: str, lake: str | None = None) -> LocalClient:
    # DuckDB and the query layer are loaded only to read a file or a lake; asking a server needs neither.
    client = connect(path, lake=lake, memory_limit_mib=memory_limit_mib, timezone=timezone)
    return cast("LocalClient", client)


def _client(args: argparse.Namespace) -> LocalClient | RemoteClient:
    settings = load_settings({"memory_limit_mib": args.memory_limit_mib}, config_file=args.config)
    if args.db:
        return _local(args.db, settings.memory_limit_mib, settings.timezone)
    if args.lake:
        return _local(None, settings.memory_limit_mib, settings.timezone, lake=args.lake)
    # Importing revenue writes: it takes an ingest token; everything else reads.
    writes = getattr(args, "revenue_command", None) == "import"
    tokens = (*settings.ingest_tokens, *settings.read_tokens) if writes else settings.read_tokens
    token = args.token or next(iter(tokens), None)
    ca_file = args.ca_file or settings.tls_cert_file or None
    if args.url:
        return RemoteClient(args.url, token=token, ca_file=ca_file)
    host, port = split_address(settings.api_listen, "api_listen")
    host = "127.0.0.1" if host in ("0.0.0.0", "") else host
    scheme = "https" if settings.tls_cert_file else "http"
    url = f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"
    remote = RemoteClient(url, timeout=60, token=token, ca_file=ca_file)
    try:
        remote.health()
        return remote
    except Unavailable as not_served:
        try:
            if settings.lake:
                return _local(None, settings.memory_limit_mib, settings.timezone, lake=settings.lake)
            return _local(settings.db, settings.memory_limit_mib, settings.timezone)
        except Unavailable as no_file:
            raise Unavailable(
                f"nothing to read: no server answers at {url} ({not_served}), and {no_file}. "
                "Start `user-metrics serve`, or pass --url, --db or --lake."
            ) from None


def run(args: argparse.Namespace) -> int:
    """Run one reading command and print its answer."""
    filters = {
        name: getattr(args, attr, None)
        for name, attr in (
            ("properties", "property"),
            ("model",) * 2,
            ("service",) * 2,
            ("environment",) * 2,
            ("tz",) * 2,
        )
    }
    with _client(args) as client:
        if args.command == "revenue":
            return revenue_commands.run(args, client, _table)
        if args.command == "statement":
            print(render_statement(statement_pages(client, args), args.format, _table), end="")
            return 0
        if args.command == "sql":
            result: Any = client.sql(args.sql, limit=args.limit)
        elif args.command == "users":
            result = client.users(
                args.since,
                args.until,
                sort=args.sort,
                limit=args.limit,
                offset=args.offset,
                search=args.search,
                **filters,
            )
        elif args.command == "requests":
            result = client.recent_requests(args.user_id, args.since, args.until, limit=args.limit, **filters)
        elif args.command == "properties" and args.key is None:
            result = client.property_keys()
        elif args.command == "user":
            result = client.user(args.user_id, args.since, args.until, **filters)
        elif args.command == "timeseries":
            result = client.timeseries(args.user, args.since, args.until, bucket=args.bucket, **filters)
        elif args.command == "properties":
            result = client.by_property(args.key, args.since, args.until, limit=args.limit, **filters)
        elif args.command == "coverage":
            result = client.coverage(args.since, args.until, limit=args.limit, **filters)
        elif args.command == "anomalies":
            threshold = {} if args.threshold is None else {"threshold": args.threshold}
            result = client.anomalies(args.since, args.until, history=args.history, tz=args.tz, **threshold)
        else:
            result = client.totals(args.since, args.until, **filters)
    print(render(args.command, to_json(result), args.format), end="")
    return 0


def render(command: str, data: dict[str, Any], fmt: str) -> str:
    """The JSON form (as the HTTP API answers it), CSV, or a readable table."""
    if fmt == "json":
        return json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    if command == "coverage":
        return coverage_text(data, fmt, _table)
    header, rows, note = _tabular(command, data, full=fmt == "csv")
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(header)
        writer.writerows([[cell(_exact(v)) for v in row] for row in rows])
        return out.getvalue()
    text_rows = [[_text(v) for v in row] for row in rows]
    return _table(header, text_rows) + (note + "\n" if note else "")


def _tabular(command: str, data: dict[str, Any], full: bool) -> tuple[Sequence[str], list[list[Any]], str]:
    window = f"{data.get('since')} .. {data.get('until')}"
    if command == "users":
        fields = (
            [f for f in USER_FIELDS if f != "models"] if full else _with_profit(USER_TABLE, data["users"])
        )
        rows = [[_cell(u, f, full) for f in fields] for u in data["users"]]
        if full:
            fields.append("models")
            for row, u in zip(rows, data["users"], strict=True):
                row.append(";".join(f"{m['provider']}/{m['model']}" for m in u["models"]))
        return fields, rows, f"{len(rows)} of {data['total']} users, {window}"
    if command in ("user", "totals"):
        pairs = [[k, v] for k, v in data.items() if k != "models"]
        if command == "user" and not full:
            for m in data["models"]:
                pairs.append(
                    [f"model {m['provider']}/{m['model']}", f"{m['requests']} requests, ${m['cost_usd']}"]
                )
        elif command == "user":
            pairs.append(["models", ";".join(f"{m['provider']}/{m['model']}" for m in data["models"])])
        return ["field", "value"], pairs, ""
    if command == "requests":
        fields = ["start_time", "model", "input_tokens", "output_tokens", "cost_usd", "duration_ms", "status"]
        if full:
            fields = list(data["requests"][0]) if data["requests"] else fields
        rows = [[r[f] for f in fields] for r in data["requests"]]
        return fields, rows, f"{len(rows)} latest requests of {data['user_id']!r}, {window}"
    if command == "properties" and "keys" in data:
        return ["key"], [[k] for k in data["keys"]], f"{len(data['keys'])} property keys"
    if command == "timeseries":
        fields = ["start", "requests", "errors", "total_tokens", "cost_usd", "unpriced_requests"]
        if full:
            fields = list(data["points"][0]) if data["points"] else fields
        rows = [
            [_local_start(p[f], data.get("tz")) if f == "start" else p[f] for f in fields]
            for p in data["points"]
        ]
        zone = data.get("tz") or "UTC"
        return fields, rows, "" if zone == "UTC" else f"{data['bucket']}s of {zone}, starts on its clock"
    if command == "properties":
        fields = [
            "value",
            "users",
            "requests",
            "cost_usd",
            "avg_cost_per_user",
            "most_costly_user",
            "least_costly_user",
        ]
        if full:
            fields = list(data["values"][0]) if data["values"] else fields
        else:
            fields = _with_profit(fields, data["values"])
        rows = [[_cell(v, f, full, missing="(not set)") for f in fields] for v in data["values"]]
        note = f"property {data['key']!r}, {window}"
        if data["truncated"]:
            note += f"; the {len(rows)} costliest of {data['total_values']} values (raise --limit)"
        return fields, rows, note
    if command == "anomalies":
        fields = ["user_id", "metric", "method", "observed", "baseline", "score", "history_buckets"]
        rows = [[f[name] for name in fields] for f in data["findings"]]
        return fields, rows, f"{len(rows)} findings, {window}, history from {data['history_since']}"
    # sql
    rows = [list(row) for row in data["rows"]]
    note = f"{len(rows)} rows"
    if data["truncated"]:
        note = "(truncated: more rows exist; raise --limit, or select less if the size bound cut them)"
    return data["columns"], rows, note


def _local_start(start: str, tz: str | None) -> str:
    """A bucket's start on the clock of its zone, with the offset (the UTC instant as is in UTC)."""
    if not tz or tz == "UTC":
        return start
    instant = datetime.fromisoformat(start.replace("Z", "+00:00"))
    return instant.astimezone(ZoneInfo(tz)).isoformat()


def _with_profit(fields: Sequence[str], items: list[dict[str, Any]]) -> list[str]:
    """The table's columns, with revenue and margin after the cost when revenue is known."""
    out = list(fields)
    if any(item.get("revenue_usd") is not None for item in items):
        at = out.index("cost_usd") + 1
        out[at:at] = list(PROFIT_FIELDS)
    return out


def _cell(item: dict[str, Any], field: str, full: bool, missing: str = NO_USER) -> Any:
    value = item[field]
    if value is None and field in ("user_id", "value") and not full:
        return missing
    return value


def _exact(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.1f}" if abs(value) >= 10 else f"{value:.3g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _table(header: Sequence[str], rows: list[list[Any]]) -> str:
    cells = [list(map(str, header))] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = []
    for n, row in enumerate(cells):
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines) + "\n"
