"""A statement as CSV: one row per line item, then each user's cost, revenue and margin, then the
totals. The same text from the CLI and from ``GET /api/v1/statements?format=csv``.

Columns (``COLUMNS``): the month and zone on every row, so pages and months concatenate; ``row``
says what a row is: ``line`` (a line item: model, provider, bucket, count, unit, unit price,
amount), ``cost``, ``revenue``, ``margin`` (a user's; amount_usd holds it, count holds the user's
requests on ``cost``), ``total_cost``, ``total_revenue``, ``total_margin`` (every user of the
month; count holds the users on ``total_cost``). An empty cell is a null (no amount, no revenue
source, the null user). Money is exact decimal text, never rounded.

Text that comes from spans or imports (user ids, models, keys) may start with what a spreadsheet
reads as a formula (``=``, ``+``, ``-``, ``@``, a tab or a carriage return); ``cell`` prefixes such
text with ``'`` (OWASP's advice against CSV injection), leaving numbers as they are. Every CSV
the service writes passes its cells through it.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Sequence
from decimal import Decimal

from user_metrics.query.results import Statement, decimal_text

COLUMNS = (
    "month",
    "tz",
    "user_id",
    "row",
    "model",
    "provider",
    "bucket",
    "count",
    "unit",
    "unit_price_usd",
    "unit_price_basis",
    "amount_usd",
)


_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")
_FORMULA = ("=", "+", "-", "@", "\t", "\r")


def cell(value: object) -> object:
    """A CSV cell a spreadsheet will not run: text starting like a formula gets a leading ``'``
    (numbers, even negative, stay as they are)."""
    if isinstance(value, str) and value.startswith(_FORMULA) and not _NUMBER.match(value):
        return "'" + value
    return value


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, Decimal):
        return decimal_text(value)
    return str(cell(str(value)))


def statement_rows(page: Statement, *, totals: bool = True) -> Iterable[Sequence[object]]:
    """The rows of one page (without the header); ``totals`` False leaves the total rows out."""
    head = (page.month, page.tz)
    for user in page.users:
        for line in user.lines:
            yield (
                *head,
                user.user_id,
                "line",
                line.model,
                line.provider,
                line.bucket,
                line.count,
                line.unit,
                line.unit_price_usd,
                line.unit_price_basis,
                line.amount_usd,
            )
        yield (*head, user.user_id, "cost", None, None, None, user.requests, None, None, None, user.cost_usd)
        yield (*head, user.user_id, "revenue", None, None, None, None, None, None, None, user.revenue_usd)
        yield (*head, user.user_id, "margin", None, None, None, None, None, None, None, user.margin_usd)
    if totals:
        yield from _total_rows(page)


def _total_rows(page: Statement) -> Iterable[Sequence[object]]:
    head, t = (page.month, page.tz), page.totals
    yield (*head, None, "total_cost", None, None, None, t.users, None, None, None, t.cost_usd)
    yield (*head, None, "total_revenue", None, None, None, None, None, None, None, t.revenue_usd)
    yield (*head, None, "total_margin", None, None, None, None, None, None, None, t.margin_usd)


def statement_csv(pages: Iterable[Statement]) -> str:
    """The CSV text of a statement's pages, in order: one header, the totals once at the end."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    last = None
    for page in pages:
        writer.writerows([_text(v) for v in row] for row in statement_rows(page, totals=False))
        last = page
    if last is not None:
        writer.writerows([_text(v) for v in row] for row in _total_rows(last))
    return out.getvalue()
