"""Schema upgrades: a database written by an older build opens in place and keeps every row."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import duckdb
from conftest import Service, read_requests
from otlp import T0, chat, request, span

from user_metrics.store.schema import FACT_COLUMNS_10, PENDING_COLUMNS, SCHEMA_VERSION, SPLIT_COLUMNS

# The columns of `requests` in schema 6, the version before price_provider and cache_added_to_input.
SCHEMA_6_COLUMNS = [
    "trace_id",
    "span_id",
    "parent_span_id",
    "start_time",
    "duration_ms",
    "user_id",
    "session_id",
    "service_name",
    "environment",
    "operation",
    "provider",
    "request_model",
    "response_model",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "cost_usd",
    "cost_source",
    "status",
    "error_type",
    "streaming",
    "properties",
]
NEW_COLUMNS = ["cache_added_to_input", "price_provider", "scope_name", "scope_version", *SPLIT_COLUMNS]
OLD_PENDING_COLUMNS = ["waiting_for", "deadline_us"]  # schemas 6 to 9
NEW_PENDING_COLUMNS = [name for name in PENDING_COLUMNS if name not in OLD_PENDING_COLUMNS]
TRACE = bytes.fromhex("0af7651916cd43dd8448eb211c80319c")
PARENT = bytes.fromhex("b7ad6b7169203331")


def columns(con: duckdb.DuckDBPyConnection, table: str) -> list[str]:
    return [row[0] for row in con.execute(f"DESCRIBE {table}").fetchall()]


def make_schema_6(db: Path) -> None:
    """A database as schema 6 left it: rows stored, one LLM span waiting in `pending` for its parent."""
    svc = Service(db, attribution_window_seconds=3600.0)
    app = svc.start()
    app.ingestor.export(request([span(chat(user="old-user", inp=1000, out=10))]))
    orphan = span(
        chat(user=None, model="gpt-4o", inp=500, out=5), trace_id=TRACE, parent=PARENT, start=T0 + 1
    )
    app.ingestor.export(request([orphan]))
    svc.stop()
    con = duckdb.connect(str(db))
    try:
        con.execute("BEGIN")
        for name in NEW_COLUMNS:
            con.execute(f"ALTER TABLE requests DROP COLUMN {name}")
        exclude = ", ".join(NEW_COLUMNS + NEW_PENDING_COLUMNS)
        con.execute(f"CREATE TABLE pending6 AS SELECT * EXCLUDE ({exclude}) FROM pending")
        for name, _ in FACT_COLUMNS_10:
            con.execute(f"ALTER TABLE span_facts DROP COLUMN {name}")
        con.execute("DROP TABLE pending")
        con.execute("ALTER TABLE pending6 RENAME TO pending")
        con.execute("UPDATE meta SET value = '6' WHERE key = 'schema_version'")
        con.execute("COMMIT")
        assert columns(con, "requests") == SCHEMA_6_COLUMNS
        assert columns(con, "pending") == [*SCHEMA_6_COLUMNS, *OLD_PENDING_COLUMNS]
        assert con.execute("SELECT count(*) FROM pending").fetchone() == (1,)
    finally:
        con.close()


class TestUpgradeFrom6:
    def test_a_schema_6_database_upgrades_in_place_and_keeps_its_rows(self, tmp_path: Path) -> None:
        """Opening a schema-6 file appends the new columns to requests (NULL in old rows), rebuilds
        pending in the same column order, and its waiting row still finalises when its parent comes."""
        db = tmp_path / "um.duckdb"
        make_schema_6(db)
        svc = Service(db, attribution_window_seconds=3600.0)
        app = svc.start()
        parent = span({"user.id": "late-user"}, trace_id=TRACE, span_id=PARENT, name="handle_request")
        app.ingestor.export(request([parent]))
        app.ingestor.export(request([span(chat(user="new-user", inp=2000, out=20))]))
        svc.stop()

        con = duckdb.connect(str(db), read_only=True)
        try:
            assert columns(con, "requests") == SCHEMA_6_COLUMNS + NEW_COLUMNS
            assert columns(con, "pending") == [*SCHEMA_6_COLUMNS, *NEW_COLUMNS, *PENDING_COLUMNS]
            assert con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (
                SCHEMA_VERSION,
            )
            assert con.execute("SELECT count(*) FROM pending").fetchone() == (0,)
        finally:
            con.close()
        rows = {r["user_id"]: r for r in read_requests(db)}
        assert set(rows) == {"old-user", "late-user", "new-user"}
        assert rows["old-user"]["input_tokens"] == 1000 and rows["old-user"]["cost_source"] == "computed"
        for old in ("old-user", "late-user"):  # stored or priced before the upgrade: unknown
            assert (rows[old]["cache_added_to_input"], rows[old]["price_provider"]) == (None, None)
        assert (rows["late-user"]["parent_span_id"], rows["late-user"]["input_tokens"]) == (PARENT.hex(), 500)
        new = rows["new-user"]
        assert (new["cache_added_to_input"], new["price_provider"]) == (False, "openai")
        assert (new["scope_name"], rows["old-user"]["scope_name"]) == ("tests", None)

    def test_opening_again_changes_nothing(self, tmp_path: Path) -> None:
        """An upgraded file opens again as it is (the upgrade runs once)."""
        db = tmp_path / "um.duckdb"
        make_schema_6(db)
        for _ in range(2):
            svc = Service(db, attribution_window_seconds=3600.0)
            svc.start()
            svc.stop()
        con = duckdb.connect(str(db), read_only=True)
        try:
            assert columns(con, "pending") == [*SCHEMA_6_COLUMNS, *NEW_COLUMNS, *PENDING_COLUMNS]
            assert con.execute("SELECT count(*) FROM pending").fetchone() == (1,)
        finally:
            con.close()
        assert len(read_requests(db)) == 1


SCHEMA_8_COLUMNS = [*SCHEMA_6_COLUMNS, "cache_added_to_input", "price_provider"]
SCOPE_COLUMNS = ["scope_name", "scope_version"]


class TestUpgradeFrom8:
    def test_a_schema_8_file_gains_the_scope_columns_and_keeps_its_rows(self, tmp_path: Path) -> None:
        """A file the code of schema 8 wrote (tests/data/make_schema8_db.py, with a row waiting in
        pending) opens in place: requests and pending gain scope_name and scope_version at the end
        (NULL in old rows), pending its own new columns and span_facts those of LLM spans, the rollups
        are kept as they are, and new rows carry their scope."""
        db = tmp_path / "old.duckdb"
        with (
            gzip.open(Path(__file__).parents[1] / "data" / "schema8.duckdb.gz", "rb") as src,
            db.open("wb") as dst,
        ):
            shutil.copyfileobj(src, dst)
        con = duckdb.connect(str(db), read_only=True)
        try:
            assert con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == ("8",)
            assert columns(con, "requests") == SCHEMA_8_COLUMNS
            assert con.execute("SELECT count(*) FROM pending").fetchone() == (1,)
            rollup_before = con.execute("SELECT * FROM rollup_user_day ORDER BY ALL").fetchall()
        finally:
            con.close()
        con = duckdb.connect(str(db))  # the file was written long ago: its row still waits for its parent
        try:
            con.execute("UPDATE pending SET deadline_us = 2 ** 62")
        finally:
            con.close()
        svc = Service(db, attribution_window_seconds=3600.0)
        app = svc.start()
        parent = span({"user.id": "late-user"}, trace_id=TRACE, span_id=PARENT, name="handle_request")
        app.ingestor.export(request([parent]))
        app.ingestor.export(request([span(chat(user="new-user", inp=2000, out=20))]))
        svc.stop()
        con = duckdb.connect(str(db), read_only=True)
        try:
            assert con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (
                SCHEMA_VERSION,
            )
            assert columns(con, "requests") == [*SCHEMA_8_COLUMNS, *SCOPE_COLUMNS, *SPLIT_COLUMNS]
            assert columns(con, "pending") == [
                *SCHEMA_8_COLUMNS,
                *SCOPE_COLUMNS,
                *SPLIT_COLUMNS,
                *PENDING_COLUMNS,
            ]
            assert columns(con, "span_facts")[-3:] == [name for name, _ in FACT_COLUMNS_10]
            old_users = {"alice", "bob", None}
            rollup_after = con.execute(
                "SELECT * FROM rollup_user_day WHERE user_key IN "
                "(SELECT user_key FROM users WHERE user_id IN ('alice', 'bob')) OR user_key = 0 ORDER BY ALL"
            ).fetchall()
        finally:
            con.close()
        rows = read_requests(db)
        by_user: dict[str | None, list[dict[str, object]]] = {}
        for row in rows:
            by_user.setdefault(row["user_id"], []).append(row)
        assert set(by_user) == old_users | {"late-user", "new-user"}
        for user in old_users | {"late-user"}:  # stored, or waiting, before the upgrade: unknown
            assert all((r["scope_name"], r["scope_version"]) == (None, None) for r in by_user[user])
        assert by_user["late-user"][0]["input_tokens"] == 500
        assert (by_user["new-user"][0]["scope_name"], by_user["new-user"][0]["scope_version"]) == (
            "tests",
            None,
        )
        assert rollup_after == rollup_before, "a schema-8 file keeps its rollups (no rebuild)"
