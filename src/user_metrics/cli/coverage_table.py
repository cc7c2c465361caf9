"""``user-metrics coverage`` as a readable table or CSV (JSON is the API's answer as it is).

The table shows the stored shares per service and scope, then what the running service saw: the
skipped spans that look like LLM calls, their attribute keys, and the keys no convention reads.
CSV is one long table: (service, scope, version, item, key, count), an item per figure or key.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from user_metrics.query.statement_csv import cell

Table = Callable[[Sequence[str], list[list[Any]]], str]
SCOPE = ("service_name", "scope_name", "scope_version")
COUNTS = ("requests", "with_user", "with_session", "with_cost")
LISTS = (
    ("skipped_span_names", "skipped span"),
    ("skipped_keys", "skipped key"),
    ("unread_keys", "unread key"),
)
FROM_FILE = (
    "read from the database file: only the stored shares. The skipped LLM-looking spans and the "
    "unread attribute keys are counted by a running service; ask it with --url"
)


def coverage_text(data: dict[str, Any], fmt: str, table: Table) -> str:
    """The coverage answer (its JSON form) as ``fmt``: table or csv."""
    if fmt == "csv":
        return _csv(data)
    window = f"{data['since']} .. {data['until']}"
    rows = [
        [
            *(_name(s[f]) for f in SCOPE),
            s["requests"],
            *(_percent(s[f"{n}_share"]) for n in ("user", "session", "cost")),
        ]
        for s in data["scopes"]
    ]
    header = ["service", "scope", "version", "requests", "with user", "with session", "with cost"]
    out = table(header, rows) + f"{len(rows)} service/scope pairs with stored requests, {window}\n"
    if not data["live"]:
        return out + FROM_FILE + "\n"
    items = []
    for e in data["spans"]:
        where = [_name(e[f]) for f in SCOPE]
        items.append([*where, "LLM spans mapped", "", e["llm_spans"]])
        items.append([*where, "LLM-looking spans skipped", "", e["llm_like_skipped"]])
        for field, label in LISTS:
            items += [[*where, label, k["key"], k["count"]] for k in e[field]]
    header = ["service", "scope", "version", "what", "key", "count"]
    note = f"seen by the running service since {data['live_since']} (not windowed)"
    return out + "\n" + table(header, items) + note + "\n"


def _csv(data: dict[str, Any]) -> str:
    out = io.StringIO()
    writer = _SafeWriter(csv.writer(out, lineterminator="\n"))
    writer.writerow([*SCOPE, "item", "key", "count"])
    for s in data["scopes"]:
        writer.writerows([[*(s[f] or "" for f in SCOPE), name, "", s[name]] for name in COUNTS])
    for e in data["spans"]:
        where = [e[f] or "" for f in SCOPE]
        writer.writerow([*where, "llm_spans", "", e["llm_spans"]])
        writer.writerow([*where, "llm_like_skipped", "", e["llm_like_skipped"]])
        for field, _label in LISTS:
            writer.writerows([[*where, field, k["key"], k["count"]] for k in e[field]])
    return out.getvalue()


def _name(value: str | None) -> str:
    return "(none)" if value is None else value


def _percent(share: float) -> str:
    return f"{share * 100:.1f} %"


class _SafeWriter:
    """A csv writer whose cells pass through ``cell`` (no formulas for a spreadsheet to run)."""

    def __init__(self, writer: Any) -> None:
        self._writer = writer

    def writerow(self, row: Iterable[object]) -> None:
        self._writer.writerow([cell(v) for v in row])

    def writerows(self, rows: Iterable[Iterable[object]]) -> None:
        for row in rows:
            self.writerow(row)
