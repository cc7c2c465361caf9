"""span_links: the facts of spans without identity, stored as integers, still lead to the user.

An LLM span waits for its ancestors; a plain span between it and the span with the user is kept
as a parent link (``links.py``), not a ``span_facts`` row. Attribution must walk through it as
through any fact: across requests and across a restart.
"""

from __future__ import annotations

import signal
from pathlib import Path

import duckdb
import pyarrow as pa
from conftest import Service, read_requests
from otlp import chat, request, span
from senders import raw_export
from servers import start_server

from user_metrics.store import links, schema
from user_metrics.store.batches import FACTS_SCHEMA
from user_metrics.store.schema import SCHEMA_VERSION

# Ids with the top bit set and with leading zeros: both must come back as the same text.
TRACE = bytes([0xFF] * 8 + [0] * 7 + [1])
USER_SPAN, PLAIN_SPAN, LLM_SPAN = bytes([0x80] + [0] * 7), bytes([0] * 7 + [2]), bytes([0xFE] * 8)


def test_an_llm_span_reaches_its_user_through_a_plain_span_sent_later_and_a_restart(tmp_path: Path) -> None:
    db = tmp_path / "um.duckdb"
    proc, target = start_server(db, "--attribution-window-seconds", "600")
    raw_export(
        target,
        request(
            [span(chat(user=None), trace_id=TRACE, span_id=LLM_SPAN, parent=PLAIN_SPAN)]
        ).SerializeToString(),
    )
    plain = span(
        {"http.route": "/chat"}, trace_id=TRACE, span_id=PLAIN_SPAN, parent=USER_SPAN, name="GET /chat"
    )
    raw_export(target, request([plain]).SerializeToString())
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=30)
    assert read_requests(db) == []  # still waiting, for the span with the user
    con = duckdb.connect(str(db), read_only=True)
    try:  # the plain span is a link, not a fact
        assert con.execute(
            "SELECT count(*) FROM span_facts WHERE span_id = ?", [PLAIN_SPAN.hex()]
        ).fetchall() == [(0,)]
        assert con.execute("SELECT span, parent FROM span_links").fetchall() == [
            (int.from_bytes(PLAIN_SPAN, "big"), int.from_bytes(USER_SPAN, "big"))
        ]
    finally:
        con.close()
    proc, target = start_server(db, "--attribution-window-seconds", "600")
    root = span({"user.id": "erin", "property.plan": "pro"}, trace_id=TRACE, span_id=USER_SPAN, name="POST /")
    raw_export(target, request([root]).SerializeToString())
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=30)
    [row] = read_requests(db)
    assert (row["span_id"], row["user_id"], row["properties"]) == (LLM_SPAN.hex(), "erin", {"plan": "pro"})


def _facts(rows: list[tuple[object, ...]]) -> pa.Table:
    return pa.table([list(column) for column in zip(*rows, strict=True)], schema=FACTS_SCHEMA)


def test_split_keeps_identity_and_other_spellings_as_facts_and_reads_back_the_same() -> None:
    t, u = "ff" * 8 + "00" * 7 + "01", "0123456789abcdef"
    rows = [
        (t, "8000000000000000", None, None, None, None, 5, None, None, None),  # a root: link
        (t, "0000000000000002", "8000000000000000", None, None, [], 6, None, None, None),  # link
        (t, "00000000000000aa", "0000000000000002", "ann", None, None, 7, None, None, None),  # user
        (t, "00000000000000bb", "0000000000000002", None, None, [("plan", "x")], 8, None, None, None),
        (t, "00000000000000cc", u, None, None, None, 9, "call", "gpt", None),  # an LLM span
        (t.upper(), u, None, None, None, None, 10, None, None, None),  # not the mapper's spelling
        ("abc", u, None, None, None, None, 11, None, None, None),  # too short
        (t, u, "xyz", None, None, None, 12, None, None, None),  # a parent that is no span id
    ]
    facts = _facts(rows)
    rest, plain = links.split(facts)
    assert rest is not None and plain is not None
    assert rest["span_id"].to_pylist() == [r[1] for r in rows[2:]]
    assert plain.num_rows == 2 and plain["parent"].to_pylist() == [None, 2**63]
    con = duckdb.connect()
    try:
        schema.create_or_upgrade(con, ":memory:", 100)
        con.register("rest_facts", rest)
        con.register("plain", plain)
        con.execute("INSERT INTO span_facts BY NAME SELECT * FROM rest_facts")
        con.execute("INSERT INTO span_links SELECT * FROM plain")
        con.register("every", facts)
        back = con.execute(
            f"SELECT * FROM ({links.facts_sql('SELECT trace_id FROM every')}) ORDER BY seen_us"
        ).fetchall()
    finally:
        con.close()
    assert [(*r[:5], dict(r[5] or {}), *r[6:]) for r in back] == [
        (*r[:5], dict(r[5] or {}), *r[6:]) for r in rows
    ]


def test_no_plain_fact_leaves_the_table_as_it_is() -> None:
    facts = _facts([("ab" * 16, "cd" * 8, None, "bob", None, None, 1, None, None, None)])
    assert links.split(facts) == (facts, None)


def test_a_schema_12_file_gains_span_links_and_its_plain_facts_still_lead_to_the_user(tmp_path: Path) -> None:
    """Schema 12 kept every fact in span_facts: after the upgrade those facts are walked as before."""
    db = tmp_path / "um.duckdb"
    svc = Service(db, attribution_window_seconds=3600.0)
    app = svc.start()
    app.ingestor.export(request([span(chat(user=None), trace_id=TRACE, span_id=LLM_SPAN, parent=PLAIN_SPAN)]))
    plain = span(
        {"http.route": "/chat"}, trace_id=TRACE, span_id=PLAIN_SPAN, parent=USER_SPAN, name="GET /chat"
    )
    app.ingestor.export(request([plain]))
    svc.stop()
    con = duckdb.connect(str(db))
    try:  # as schema 12 left it: the plain span's fact as text in span_facts, no span_links
        con.execute(
            f"""INSERT INTO span_facts (trace_id, span_id, parent_span_id, seen_us)
                SELECT '{TRACE.hex()}', printf('%016x', span), printf('%016x', parent), seen_us FROM span_links"""
        )
        con.execute("DROP TABLE span_links")
        con.execute("UPDATE meta SET value = '12' WHERE key = 'schema_version'")
    finally:
        con.close()
    svc = Service(db, attribution_window_seconds=3600.0)
    app = svc.start()
    root = span({"user.id": "finn", "session.id": "s1"}, trace_id=TRACE, span_id=USER_SPAN, name="POST /")
    app.ingestor.export(request([root]))
    svc.stop()
    [row] = read_requests(db)
    assert (row["span_id"], row["user_id"], row["session_id"]) == (LLM_SPAN.hex(), "finn", "s1")
    con = duckdb.connect(str(db), read_only=True)
    try:
        assert con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchall() == [
            (SCHEMA_VERSION,)
        ]
        assert con.execute("SELECT count(*) FROM span_links").fetchall() == [(0,)]  # the root has a user
    finally:
        con.close()
