"""``user-metrics revenue import FILE`` and ``user-metrics revenue list``: revenue records in and out.

They reach the data as the reading commands do (``--url``, ``--db``, ``--lake``, else the
configured server, else the configured lake or file): an import is sent to the server, written
into the lake (in a lake transaction, any time), or into the file with the store's own writer
while no server holds it.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from user_metrics.errors import InvalidInput, TooLarge
from user_metrics.query.results import to_json
from user_metrics.query.statement_csv import cell
from user_metrics.settings import load_settings

# As the parser's bound (ingest/revenue_rows.py MAX_FILE_BYTES); read no more than this of a file.
MAX_FILE_BYTES = 1024 * 1024
LIST_FIELDS = ("id", "user_id", "amount_usd", "start", "end", "imported", "source")


def add_revenue_commands(commands: Any, where: argparse.ArgumentParser) -> None:
    """``revenue import`` and ``revenue list``; ``where`` holds --url, --db, --lake, --config and the rest."""
    revenue = commands.add_parser("revenue", help="import revenue records, or list the stored ones")
    actions = revenue.add_subparsers(dest="revenue_command", required=True)
    load = actions.add_parser(
        "import",
        parents=[where],
        help="import revenue records from a CSV or JSON file (all or nothing; re-importing changes nothing)",
    )
    load.add_argument("file", metavar="FILE", help="CSV with a header row, or JSON (a list of objects)")
    load.add_argument(
        "--format", choices=("csv", "json"), help="the file's format (default: from its content)"
    )
    load.add_argument(
        "--map",
        action="append",
        default=[],
        metavar="FIELD=COLUMN",
        help="read FIELD (id, user_id, amount, at, period_start, period_end, currency) from the file's "
        "COLUMN, e.g. --map user_id=Customer; repeatable",
    )
    load.add_argument(
        "--tz",
        metavar="ZONE",
        help="zone of naive times and bare dates (default: timezone setting, else UTC)",
    )
    shown = actions.add_parser("list", parents=[where], help="the stored revenue records, a page at a time")
    shown.add_argument("--user", metavar="ID", help="one user's records")
    shown.add_argument("--since", help="records touching [since, until): an ISO-8601 instant or 30d, 24h")
    shown.add_argument("--until", help="same forms")
    shown.add_argument("--limit", type=int, default=100, help="records per page (default 100, at most 1000)")
    shown.add_argument("--offset", type=int, default=0)
    shown.add_argument("--format", choices=("table", "json", "csv"), default="table", help="default: table")


def mapping(entries: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for entry in entries:
        ours, sep, theirs = entry.partition("=")
        if not sep or not ours.strip():
            raise InvalidInput(f"--map: must be FIELD=COLUMN, e.g. user_id=Customer, got {entry!r}")
        out[ours.strip()] = theirs
    return out


def run(args: argparse.Namespace, client: Any, table: Callable[[Sequence[str], list[list[Any]]], str]) -> int:
    if args.revenue_command == "import":
        path = Path(args.file)
        try:
            with path.open("rb") as file:
                data = file.read(MAX_FILE_BYTES + 1)
        except OSError as exc:
            raise InvalidInput(f"cannot read {path}: {exc.strerror or exc}") from None
        if len(data) > MAX_FILE_BYTES:
            raise TooLarge(
                f"{path} is larger than {MAX_FILE_BYTES} bytes, the bound of one import: split it "
                "(importing a record again changes nothing)"
            )
        tz = args.tz or getattr(load_settings(config_file=args.config), "timezone", None) or None
        answer = client.import_revenue(
            data, format=args.format, mapping=mapping(args.map), tz=tz, source=path.name
        )
        print(f"{answer.imported} records imported, {answer.unchanged} unchanged (imported before)")
        return 0
    page = client.revenue_records(args.user, args.since, args.until, limit=args.limit, offset=args.offset)
    data = to_json(page)
    if args.format == "json":
        sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
        return 0
    rows = [[r[f] if r[f] is not None else "" for f in LIST_FIELDS] for r in data["records"]]
    if args.format == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerows([LIST_FIELDS, *([cell(v) for v in row] for row in rows)])
        sys.stdout.write(out.getvalue())
        return 0
    sys.stdout.write(table(LIST_FIELDS, rows))
    print(f"{len(rows)} of {data['total']} records (offset {data['offset']})")
    return 0
