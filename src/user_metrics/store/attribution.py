"""Attribution across requests: the pending rows whose ancestors have now arrived (or never will).

An LLM span without a user id, or with a user id alone (no session, no property), whose ancestors
were not in its request waits in ``pending`` (durably, until a deadline); every span's own
identity waits in ``span_facts``. After each commit that brings facts or pending rows of some
traces, and by the clock for the deadlines, the store asks ``resolved_rows`` which pending rows
are done, and stores them like any others.
"""

from __future__ import annotations

import itertools
import time
from typing import Any

import duckdb
import pyarrow as pa

from user_metrics.store import links
from user_metrics.store.schema import PENDING_COLUMNS
from user_metrics.store.writer_connection import registered


def resolved_rows(
    con: duckdb.DuckDBPyConnection, traces: set[str] | None
) -> tuple[pa.Table, pa.Table, int] | None:
    """The pending rows whose ancestry is now known, or whose deadline has passed, completed.

    ``traces``: the traces a commit just brought facts or pending rows for (None: only the
    deadlines). A row takes the user and session of its nearest ancestor that has one, and the
    properties it lacks from its ancestors (nearer first); its own values always win, except a
    conversation id, which an ancestor's session id beats. A provider SDK's span still waiting for
    its counterpart (``counterparts.py``) is not done. Returns (the rows for ``requests``, their
    (trace_id, span_id) to take out of ``pending``, how many got a user), or None when no row is
    done.
    """
    now_us = time.time_ns() // 1000
    touched = pa.table({"trace_id": sorted(traces)}) if traces else None
    scope = "deadline_us <= $now" + (" OR trace_id IN (SELECT trace_id FROM touched)" if traces else "")
    with registered(con, {"touched": touched}):
        steps = con.execute(
            f"""WITH RECURSIVE
                cand AS (SELECT DISTINCT ON (trace_id, span_id) trace_id, span_id, waiting_for, deadline_us,
                                user_id IS NOT NULL AS has_user,
                                session_id IS NOT NULL AND conversation IS NOT TRUE AS has_session,
                                coalesce(cardinality(properties), 0) > 0 AS has_properties
                         FROM pending WHERE counterpart IS NOT TRUE AND ({scope})),
                facts AS (SELECT DISTINCT ON (trace_id, span_id) *
                          FROM ({links.facts_sql("SELECT trace_id FROM cand")})),
                walk(trace_id, span_id, anc, depth) AS (
                    SELECT trace_id, span_id, waiting_for, 1 FROM cand
                    UNION
                    SELECT w.trace_id, w.span_id, f.parent_span_id, w.depth + 1
                    FROM walk AS w JOIN facts AS f ON f.trace_id = w.trace_id AND f.span_id = w.anc
                    WHERE f.parent_span_id IS NOT NULL AND w.depth < 64)
            SELECT w.trace_id, w.span_id, c.deadline_us <= $now AS expired,
                   c.waiting_for IS NULL AS unbound, [c.has_user, c.has_session, c.has_properties] AS own,
                   f.span_id IS NOT NULL AS known, f.parent_span_id IS NULL AS root,
                   f.user_id, f.session_id, f.properties
            FROM walk AS w JOIN cand AS c USING (trace_id, span_id)
            LEFT JOIN facts AS f ON f.trace_id = w.trace_id AND f.span_id = w.anc
            ORDER BY w.trace_id, w.span_id, w.depth""",
            {"now": now_us},
        ).fetchall()
    resolved = _resolutions(steps)
    if resolved:
        keys = pa.table(
            {name: [r[i] for r in resolved] for i, name in enumerate(_RESOLVED_COLUMNS)},
            schema=_RESOLVED_SCHEMA,
        )
        with registered(con, {"resolved": keys}):
            final = con.execute(
                f"""SELECT p.* EXCLUDE ({", ".join(PENDING_COLUMNS)})
                          REPLACE (coalesce(p.user_id, r.user_id) AS user_id,
                                   CASE WHEN p.conversation IS TRUE THEN coalesce(r.session_id, p.session_id)
                                        ELSE coalesce(p.session_id, r.session_id) END AS session_id,
                                   map_concat(r.properties, coalesce(p.properties, MAP {{}})) AS properties)
                   FROM (SELECT DISTINCT ON (trace_id, span_id) * FROM pending) AS p
                   JOIN resolved AS r USING (trace_id, span_id)"""
            ).to_arrow_table()
        return final, keys.select(["trace_id", "span_id"]), sum(1 for r in resolved if r[2] is not None)
    return None


_RESOLVED_COLUMNS = ("trace_id", "span_id", "user_id", "session_id", "properties")
_RESOLVED_SCHEMA = pa.schema(
    [(name, pa.string()) for name in _RESOLVED_COLUMNS[:4]]
    + [("properties", pa.map_(pa.string(), pa.string()))]
)


def _resolutions(steps: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """(trace_id, span_id, user_id, session_id, properties) of each pending row that is done.

    ``steps`` are the walk's rows in order: per row, its ancestors from the nearest. A row is done
    when it and its ancestors so far have a user and a session or a property, when its ancestry
    reaches a root, when it waits for no ancestor (a provider SDK's span, now the call), or when
    it has expired.
    """
    out = []
    for (trace_id, span_id), rows in itertools.groupby(steps, key=lambda r: (r[0], r[1])):
        user = session = None
        props: dict[str, str] = {}
        walk = list(rows)
        expired, unbound, (has_user, has_session, has_properties) = bool(walk[0][2]), walk[0][3], walk[0][4]
        complete = bool(unbound)
        for *_, known, root, f_user, f_session, f_props in walk:
            if not known or complete:
                break  # the chain is broken here: that ancestor has not arrived (yet)
            user = user or f_user
            session = session or f_session
            for key, value in (f_props or {}).items():
                props.setdefault(key, value)  # nearer ancestors came first
            found = (has_user or user) and (has_session or session or has_properties or props)
            if root or found:
                complete = True
        if complete or expired:
            out.append((trace_id, span_id, user, session, list(props.items())))
    return out


def purge_facts(con: duckdb.DuckDBPyConnection, before_us: int) -> int:
    """Drop the span facts and parent links seen before ``before_us`` (in the caller's
    transaction); returns how many."""
    dropped = 0
    for table in ("span_facts", "span_links"):
        ((count,),) = con.execute(f"DELETE FROM {table} WHERE seen_us < $cut", {"cut": before_us}).fetchall()
        dropped += int(count)
    return dropped
