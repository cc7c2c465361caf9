"""Attribution across requests: the pending rows whose ancestors have now arrived (or never will).

An LLM span without a user id whose ancestors were not in its request waits in ``pending``
(durably, until a deadline); every span's own identity waits in ``span_facts``. After each commit
that brings facts or pending rows of some traces, and by the clock for the deadlines, the store
asks ``resolved_rows`` which pending rows are done, and stores them like any others.
"""

from __future__ import annotations

import itertools
import time
from typing import Any

import duckdb
import pyarrow as pa

from user_metrics.store.writer_connection import registered


def resolved_rows(
    con: duckdb.DuckDBPyConnection, traces: set[str] | None
) -> tuple[pa.Table, pa.Table, int] | None:
    """The pending rows whose ancestry is now known, or whose deadline has passed, completed.

    ``traces``: the traces a commit just brought facts or pending rows for (None: only the
    deadlines). A row takes the user and session of its nearest ancestor that has one, and the
    properties it lacks from its ancestors (nearer first); its own values always win. Returns
    (the rows for ``requests``, their (trace_id, span_id) to take out of ``pending``, how many
    got a user), or None when no row is done.
    """
    now_us = time.time_ns() // 1000
    touched = pa.table({"trace_id": sorted(traces)}) if traces else None
    scope = "deadline_us <= $now" + (" OR trace_id IN (SELECT trace_id FROM touched)" if traces else "")
    with registered(con, {"touched": touched}):
        steps = con.execute(
            f"""WITH RECURSIVE
                cand AS (SELECT DISTINCT trace_id, span_id, waiting_for, deadline_us FROM pending
                         WHERE {scope}),
                facts AS (SELECT DISTINCT ON (trace_id, span_id) * FROM span_facts
                          WHERE trace_id IN (SELECT trace_id FROM cand)),
                walk(trace_id, span_id, anc, depth) AS (
                    SELECT trace_id, span_id, waiting_for, 1 FROM cand
                    UNION
                    SELECT w.trace_id, w.span_id, f.parent_span_id, w.depth + 1
                    FROM walk AS w JOIN facts AS f ON f.trace_id = w.trace_id AND f.span_id = w.anc
                    WHERE f.parent_span_id IS NOT NULL AND w.depth < 64)
            SELECT w.trace_id, w.span_id, c.deadline_us <= $now AS expired, w.depth,
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
                """SELECT p.* EXCLUDE (waiting_for, deadline_us)
                          REPLACE (coalesce(p.user_id, r.user_id) AS user_id,
                                   coalesce(p.session_id, r.session_id) AS session_id,
                                   map_concat(r.properties, coalesce(p.properties, MAP {})) AS properties)
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
    when an ancestor gives it a user, when its ancestry reaches a root, or when it has expired.
    """
    out = []
    for (trace_id, span_id), rows in itertools.groupby(steps, key=lambda r: (r[0], r[1])):
        user = session = None
        props: dict[str, str] = {}
        complete = False
        walk = list(rows)
        expired = bool(walk[0][2])
        for _, _, _, _, known, root, f_user, f_session, f_props in walk:
            if not known:
                break  # the chain is broken here: that ancestor has not arrived (yet)
            user = user or f_user
            session = session or f_session
            for key, value in (f_props or {}).items():
                props.setdefault(key, value)  # nearer ancestors came first
            if root:
                complete = True
                break
        if user is not None or complete or expired:
            out.append((trace_id, span_id, user, session, list(props.items())))
    return out
