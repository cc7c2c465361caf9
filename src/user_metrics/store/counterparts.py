"""Provider SDKs' own spans across requests: the waiting ones whose call an instrumentation records.

anthropic (2.14+) makes a span of its own for every call beside an instrumentation's span of the
same call: the SDK's span is the instrumentation span's child, or its sibling under the same
parent with the same model. The mapper pairs them within one request; an SDK span it could not
pair waits in ``pending`` with ``counterpart`` set, and the span facts of LLM spans say which
spans are calls (``llm`` 'call'), their model, and which SDK spans a call already records
(``absorbed_by``). ``settle`` runs after each commit that brings facts or pending rows of some
traces, and by the clock, in one transaction of its own. For each waiting SDK span, whichever of
the two spans arrives second decides:
- its parent is a call that records no SDK span yet, or a sibling call of the same model that
  records none exists: the SDK span is not a call. It leaves ``pending``, its key goes into
  ``span_keys`` (a re-sent copy is a duplicate) and its fact names the call (each call records
  at most one SDK span, so two calls stay two);
- else, when its deadline has passed, or when it did not stream and its parent has arrived with
  it or after it (an exporter sends spans in the order they end, and a call that did not stream
  ends, both its spans, before its parent), it is the call: it stays in ``pending`` without the
  mark, and ``attribution.py`` stores it (at once, or when its ancestors bring its user). A
  parent that came first shows spans of this trace out of that order: then only the deadline
  decides;
- else it waits on.
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

import duckdb
import pyarrow as pa

from user_metrics.store import links
from user_metrics.store.dedupe import keys_of
from user_metrics.store.writer_connection import registered

_ABSORBED = "(trace_id, span_id) IN (SELECT (trace_id, span_id) FROM absorbed)"
_KEYS = pa.schema([("trace_id", pa.string()), ("span_id", pa.string()), ("absorbed_by", pa.string())])


def settle(con: duckdb.DuckDBPyConnection, traces: set[str] | None) -> int:
    """Decide the waiting SDK spans of ``traces`` (None: only those past their deadline); in the
    caller's transaction. Returns how many were found not to be calls of their own."""
    now_us = time.time_ns() // 1000
    touched = pa.table({"trace_id": sorted(traces)}) if traces else None
    scope = "deadline_us <= $now" + (" OR trace_id IN (SELECT trace_id FROM touched)" if traces else "")
    with registered(con, {"touched": touched}):
        waiting = con.execute(
            f"""SELECT DISTINCT ON (trace_id, span_id) trace_id, span_id, parent_span_id,
                       streaming IS TRUE, deadline_us <= $now
                FROM pending WHERE counterpart IS TRUE AND ({scope}) ORDER BY trace_id, span_id""",
            {"now": now_us},
        ).fetchall()
    if not waiting:
        return 0
    candidates = pa.table(
        {"trace_id": [w[0] for w in waiting], "parent_span_id": [w[2] for w in waiting]},
        schema=pa.schema([("trace_id", pa.string()), ("parent_span_id", pa.string())]),
    )
    with registered(con, {"candidates": candidates}):
        facts = con.execute(
            f"""SELECT trace_id, span_id, any_value(parent_span_id), max(llm), max(model), max(absorbed_by),
                      min(seen_us)
               FROM ({links.facts_sql("SELECT trace_id FROM candidates")})
               WHERE (llm IS NOT NULL OR (trace_id, span_id) IN
                      (SELECT (trace_id, parent_span_id) FROM candidates))
               GROUP BY trace_id, span_id"""
        ).fetchall()
    absorbed, calls = _decide(waiting, facts)
    if absorbed:
        table = pa.table([list(col) for col in zip(*absorbed, strict=True)], schema=_KEYS)
        with registered(con, {"absorbed": table}):
            con.execute(f"""INSERT INTO span_keys {keys_of("pending", _ABSORBED)} ON CONFLICT DO NOTHING""")
            con.execute(f"DELETE FROM pending WHERE {_ABSORBED}")
            con.execute(
                """UPDATE span_facts SET absorbed_by = a.absorbed_by FROM absorbed AS a
                   WHERE span_facts.trace_id = a.trace_id AND span_facts.span_id = a.span_id"""
            )
    if calls:
        table = pa.table([list(col) for col in zip(*calls, strict=True)], schema=_KEYS.remove(2))
        with registered(con, {"calls": table}):
            con.execute(
                """UPDATE pending SET counterpart = false
                   WHERE (trace_id, span_id) IN (SELECT (trace_id, span_id) FROM calls)"""
            )
    return len(absorbed)


def _decide(
    waiting: list[tuple[Any, ...]], facts: list[tuple[Any, ...]]
) -> tuple[list[tuple[str, str, str]], list[tuple[str, str]]]:
    """(trace, span, the call's span) of the SDK spans a call records; (trace, span) of those that
    are calls of their own. ``waiting``: (trace, span, parent, streamed, expired), by span id;
    ``facts``: (trace, span, parent, llm, model, absorbed_by, first seen) of the LLM spans and the
    parents."""
    by_span = {(f[0], f[1]): f for f in facts}
    taken = {(f[0], f[5]) for f in facts if f[5] is not None}  # calls that record an SDK span
    siblings: dict[tuple[str, str | None, str | None], list[str]] = defaultdict(list)
    for trace, span, parent, llm, model, *_ in sorted(facts, key=lambda f: (f[0], f[1])):
        if llm == "call":
            siblings[(trace, parent, model)].append(span)
    absorbed: list[tuple[str, str, str]] = []
    calls: list[tuple[str, str]] = []
    for trace, span, parent, streamed, expired in waiting:
        own = by_span.get((trace, span))
        if own is not None and own[5] is not None:  # a re-sent copy of an SDK span already paired
            absorbed.append((trace, span, own[5]))
            continue
        by = _counterpart(trace, parent, own, by_span, siblings, taken)
        if by is not None:
            taken.add((trace, by))
            absorbed.append((trace, span, by))
        elif expired or (not streamed and own is not None and _after(by_span.get((trace, parent)), own)):
            calls.append((trace, span))
    return absorbed, calls


def _after(parent: tuple[Any, ...] | None, own: tuple[Any, ...]) -> bool:
    """The parent's fact came with the SDK span's or after it, as spans that end in that order do."""
    return parent is not None and parent[6] >= own[6]


def _counterpart(
    trace: str,
    parent: str | None,
    own: tuple[Any, ...] | None,
    by_span: dict[tuple[str, str], tuple[Any, ...]],
    siblings: dict[tuple[str, str | None, str | None], list[str]],
    taken: set[tuple[str, str | None]],
) -> str | None:
    """The span id of the call that records this SDK span: its parent, else a sibling of its model."""
    above = by_span.get((trace, parent)) if parent is not None else None
    if above is not None and above[3] == "call" and (trace, parent) not in taken:
        return parent
    if own is None:
        return None
    for call in siblings.get((trace, parent, own[4]), []):
        if (trace, call) not in taken:
            return call
    return None
