"""Revenue through the store's writer: ``Store.run`` jobs, imports all or nothing, plan prices replaced."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import duckdb
import pytest

from user_metrics.errors import BadRows, Unavailable
from user_metrics.ingest.revenue_import import import_revenue
from user_metrics.stats import Stats
from user_metrics.store.revenue import store_records, write_plan_prices
from user_metrics.store.writer import Store

ROWS = [("a", "u1", Decimal("10"), 1, 2), ("b", "u2", Decimal("-1.5"), 5, 5)]


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(tmp_path / "um.duckdb", Stats())
    yield s
    s.close()


def revenue(store: Store) -> list[tuple[object, ...]]:
    with store.reader() as con:
        return con.execute(
            "SELECT id, user_id, amount_usd, start_us, end_us FROM revenue ORDER BY id"
        ).fetchall()


class TestJobs:
    def test_a_job_runs_in_one_transaction_on_the_writer_and_answers_once_committed(
        self, store: Store
    ) -> None:
        stored = store.run(lambda con: store_records(con, ROWS, 7, "t", 10)).result(timeout=60)
        assert (stored.new, stored.unchanged) == (2, 0)
        assert revenue(store) == [("a", "u1", Decimal("10"), 1, 2), ("b", "u2", Decimal("-1.5"), 5, 5)]

    def test_a_failing_job_stores_nothing_and_the_writer_goes_on(self, store: Store) -> None:
        def half_then_fail(con: duckdb.DuckDBPyConnection) -> None:
            store_records(con, ROWS, 7, "t", 10)
            raise RuntimeError("boom")

        with pytest.raises(RuntimeError, match="boom"):
            store.run(half_then_fail).result(timeout=60)
        assert revenue(store) == []
        assert store.run(lambda con: store_records(con, ROWS, 7, "t", 10)).result(timeout=60).new == 2

    def test_after_close_a_job_is_refused(self, tmp_path: Path) -> None:
        s = Store(tmp_path / "x.duckdb", Stats())
        s.close()
        with pytest.raises(Unavailable):
            s.run(lambda con: None).result(timeout=60)


class TestRecords:
    def test_same_content_is_unchanged_other_content_stores_nothing(self, store: Store) -> None:
        store.run(lambda con: store_records(con, ROWS, 7, "t", 10)).result(timeout=60)
        again = store.run(lambda con: store_records(con, [*ROWS, ("c", "u3", Decimal(1), 1, 1)], 8, "t", 10))
        assert (again.result(timeout=60).new, again.result().unchanged) == (1, 2)
        changed = [("a", "u1", Decimal("11"), 1, 2), ("d", "u4", Decimal(1), 1, 1)]
        stored = store.run(lambda con: store_records(con, changed, 9, "t", 10)).result(timeout=60)
        assert stored.conflicts == (("a", "u1", Decimal("10"), 1, 2),) and stored.conflicting == 1
        assert [r[0] for r in revenue(store)] == ["a", "b", "c"]  # no d

    def test_an_import_with_a_conflict_names_its_row(self, store: Store) -> None:
        text = "id,user_id,amount,at\nx,u,1,2026-11-01T00:00:00Z\n"
        assert import_revenue(store, text) == (1, 0)
        with pytest.raises(BadRows, match="row 2: record 'x' was imported before with user 'u', amount 1"):
            import_revenue(store, text.replace(",1,", ",2,"))
        assert import_revenue(store, text) == (0, 1)


class TestPlanPrices:
    def test_written_prices_replace_the_last(self, store: Store) -> None:
        store.run(lambda con: write_plan_prices(con, "plan", [("pro", Decimal("20"), "month")])).result(
            timeout=60
        )
        store.run(lambda con: write_plan_prices(con, "tier", [("gold", Decimal("240"), "year")])).result(
            timeout=60
        )
        with store.reader() as con:
            assert con.execute("SELECT * FROM plan_prices").fetchall() == [
                ("tier", "gold", Decimal("240"), "year")
            ]
