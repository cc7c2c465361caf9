"""``user-metrics statement``: a month's statement, every user (read page by page) or one.

CSV (one row per line item, then each user's cost, revenue and margin, then the month's totals:
``query/statement_csv.py``), JSON (the HTTP API's form, every user in one ``users`` list) or a
readable table of the CSV rows.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from typing import TYPE_CHECKING, Any

from user_metrics.query.results import Statement, to_json
from user_metrics.query.statement_csv import COLUMNS, statement_csv, statement_rows

if TYPE_CHECKING:
    from user_metrics.client import RemoteClient
    from user_metrics.serve.local_client import LocalClient

PAGE = 5000  # users per request while reading every user (each request reads the month once)


def add_statement_command(commands: Any, parents: list[argparse.ArgumentParser]) -> None:
    one = commands.add_parser(
        "statement",
        parents=parents,
        help="a month's statement: line items per model and bucket, cost, revenue, margin per user",
    )
    one.add_argument("--month", required=True, help="YYYY-MM (e.g. 2026-11), this_month or last_month")
    one.add_argument("--user", metavar="ID", help="only this user (default: every user of the month)")
    one.add_argument(
        "--tz",
        metavar="ZONE",
        help="the month in this IANA zone (default: the timezone setting, UTC unless set)",
    )


def statement_pages(client: LocalClient | RemoteClient, args: argparse.Namespace) -> list[Statement]:
    """Every page of the statement, in order (one page for one user)."""
    pages = [client.statement(args.month, args.user, args.tz, limit=PAGE, offset=0)]
    while args.user is None and pages[-1].offset + len(pages[-1].users) < pages[-1].totals.users:
        if not pages[-1].users:  # the month changed under us (this_month): stop, never loop
            break
        offset = pages[-1].offset + len(pages[-1].users)
        pages.append(client.statement(args.month, None, args.tz, limit=PAGE, offset=offset))
    return pages


def render_statement(pages: list[Statement], fmt: str, table: Any) -> str:
    if fmt == "csv":
        return statement_csv(pages)
    if fmt == "json":
        whole = pages[0]
        if len(pages) > 1:  # one page of every user
            users = tuple(u for page in pages for u in page.users)
            whole = dataclasses.replace(pages[-1], users=users, offset=0, limit=len(users))
        return json.dumps(to_json(whole), indent=2, ensure_ascii=False) + "\n"
    rows = [row for i, page in enumerate(pages) for row in statement_rows(page, totals=i == len(pages) - 1)]
    text: str = table(COLUMNS[2:], [["" if v is None else str(v) for v in row[2:]] for row in rows])
    return text + f"{pages[-1].month} in {pages[-1].tz}: {pages[-1].since} .. {pages[-1].until}\n"
