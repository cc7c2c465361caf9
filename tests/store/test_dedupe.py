"""store/dedupe.py: span keys kept for the dedupe horizon only; spans older than it are still
stored once (found in ``requests``), across restarts, purges and a schema-11 file's upgrade."""

from __future__ import annotations

import time
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest
from conftest import one_row_table

from user_metrics.stats import Stats
from user_metrics.store import dedupe
from user_metrics.store import writer as store_module
from user_metrics.store.writer import Store

DAY_NS = 86_400 * 10**9


def rows(*spans: tuple[str, int]) -> pa.Table:
    """One priced LLM call per (span letter, start in ns) (``conftest.one_row_table``)."""
    return pa.concat_tables([one_row_table(letter, start) for letter, start in spans])


def stored(db: Path) -> tuple[list[str], int, int]:
    """(span ids stored, sorted; requests in user_totals; keys in span_keys)."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        spans = [s for (s,) in con.execute("SELECT span_id FROM requests ORDER BY 1").fetchall()]
        ((total,),) = con.execute("SELECT coalesce(sum(requests), 0)::BIGINT FROM user_totals").fetchall()
        ((keys,),) = con.execute("SELECT count(*) FROM span_keys").fetchall()
        return spans, int(total), int(keys)
    finally:
        con.close()


def purge(db: Path) -> int:
    con = duckdb.connect(str(db))
    try:
        con.execute("BEGIN")
        keys_from = dedupe.purge(con)
        con.execute("COMMIT")
        return keys_from
    finally:
        con.close()


def write(db: Path, table: pa.Table) -> Stats:
    stats = Stats()
    store = Store(db, stats)
    try:
        store.write(table).result(timeout=60)
    finally:
        store.close()
    return stats


class TestHorizon:
    def test_keys_past_the_horizon_are_purged_and_their_spans_still_stored_once(self, tmp_path: Path) -> None:
        """A span three days old and a recent one: the purge keeps only the recent key. Sent
        again after a restart, with a new old span and the old one twice more in the same batch,
        each is stored once (the old ones checked against requests, and counted), and the
        rollups add up to the rows."""
        db = tmp_path / "um.duckdb"
        now, old = time.time_ns(), time.time_ns() - 3 * DAY_NS
        write(db, rows(("x", old), ("y", now)))
        assert stored(db) == (["x" * 16, "y" * 16], 2, 2)
        keys_from = purge(db)
        assert old // 1000 < keys_from < now // 1000
        assert stored(db) == (["x" * 16, "y" * 16], 2, 1), "only the recent span's key stays"

        stats = write(db, rows(("x", old), ("y", now), ("z", old), ("x", old)))
        assert stored(db) == (["x" * 16, "y" * 16, "z" * 16], 3, 1)
        assert (stats.spans_stored, stats.spans_duplicate, stats.spans_past_horizon) == (1, 3, 3)
        stats = write(db, rows(("z", old)))
        assert stored(db)[:2] == (["x" * 16, "y" * 16, "z" * 16], 3)
        assert (stats.spans_stored, stats.spans_duplicate) == (0, 1)

    def test_keys_from_never_moves_back(self, tmp_path: Path) -> None:
        """A purge with a clock that went back keeps the later keys_from (it is kept in meta)."""
        db = tmp_path / "um.duckdb"
        write(db, rows(("x", time.time_ns())))
        later = purge(db)
        con = duckdb.connect(str(db))
        try:
            assert dedupe.purge(con, now_us=0) == later
            assert dedupe.keys_from(con) == later
        finally:
            con.close()

    def test_the_writers_own_purge_moves_its_horizon(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The writer purges by the clock and then dedupes by the new keys_from at once: an old
        span whose key it purged, sent again, is not stored twice."""
        monkeypatch.setattr(store_module, "PURGE_EVERY_S", 0.05)
        db = tmp_path / "um.duckdb"
        stats = Stats()
        store = Store(db, stats)
        try:
            old = time.time_ns() - 3 * DAY_NS
            store.write(rows(("x", old))).result(timeout=60)  # a fresh file: stored with its key
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                with store.reader() as con:
                    if con.execute("SELECT count(*) FROM span_keys").fetchall() == [(0,)]:
                        break
                time.sleep(0.05)
            store.write(rows(("x", old))).result(timeout=60)
            store.write(rows(("w", time.time_ns()))).result(timeout=60)
        finally:
            store.close()
        assert stored(db) == (["w" * 16, "x" * 16], 2, 1)
        assert (stats.spans_stored, stats.spans_duplicate) == (2, 1)
        assert stats.spans_past_horizon >= 1  # the second x; the first too if the purge came first


class TestUpgradeFrom11:
    def test_a_schema_11_file_keeps_the_horizons_keys_and_stores_nothing_twice(self, tmp_path: Path) -> None:
        """A file with schema 11's span_keys (a key per span ever stored) opens with keys for the
        spans of the horizon only; every span sent again is a duplicate, old or recent."""
        db = tmp_path / "um.duckdb"
        now, old = time.time_ns(), time.time_ns() - 3 * DAY_NS
        write(db, rows(("x", old), ("y", now)))
        con = duckdb.connect(str(db))
        try:
            con.execute("BEGIN")
            con.execute("DROP TABLE span_keys")
            con.execute("CREATE TABLE span_keys (k HUGEINT PRIMARY KEY)")
            con.execute(f"INSERT INTO span_keys SELECT {dedupe.SPAN_KEY_SQL} FROM requests")
            con.execute("DELETE FROM meta WHERE key = 'span_keys_from'")
            con.execute("UPDATE meta SET value = '11' WHERE key = 'schema_version'")
            con.execute("COMMIT")
        finally:
            con.close()
        stats = write(db, rows(("x", old), ("y", now)))
        assert stored(db) == (["x" * 16, "y" * 16], 2, 1)
        assert (stats.spans_stored, stats.spans_duplicate, stats.spans_past_horizon) == (0, 2, 1)
        con = duckdb.connect(str(db), read_only=True)
        try:
            assert [c for (c,) in con.execute("SELECT column_name FROM (DESCRIBE span_keys)").fetchall()] == [
                "k",
                "start_us",
            ]
            assert old // 1000 < dedupe.keys_from(con) < now // 1000
        finally:
            con.close()
