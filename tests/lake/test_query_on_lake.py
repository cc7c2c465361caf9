"""The query layer's own tests, run on a lake: the spans of ``query_service`` are stored by a
service as always, shipped into a lake by ``shipper.append``, and every test of these classes
reads the lake through ``Lake.reader()`` instead of the local file. The same SQL, unchanged."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import duckdb
import pytest
from conftest import Service
from pg import PgCluster
from revenue_data import write_requests

from user_metrics.stats import Stats
from user_metrics.store.lake import Lake
from user_metrics.store.shipper import append

QUERY_TESTS = Path(__file__).parents[1] / "query"


def _tests_of(name: str) -> ModuleType:
    """tests/query/<name>.py, imported under a name of its own (pytest imports it too)."""
    spec = importlib.util.spec_from_file_location(f"lake_{name}", QUERY_TESTS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


# Collected here too, with this module's `con`: a reader of the lake.
TestUsers = _tests_of("test_users").TestUsers
TestTotals = _tests_of("test_totals").TestTotals
TestTimeseries = _tests_of("test_timeseries").TestTimeseries
TestByProperty = _tests_of("test_properties").TestByProperty
_revenue_tests = _tests_of("test_revenue")
TestPlanPrices = _revenue_tests.TestPlanPrices  # with this module's `db`: a reader of a lake
TestImportedRecords = _revenue_tests.TestImportedRecords


def _lake_of(local: duckdb.DuckDBPyConnection, cluster: PgCluster, data: Path) -> Lake:
    """A new lake holding the request rows of ``local`` (closed here), shipped in two
    transactions (so that rollup cells are split over two rows, as ships leave them)."""
    try:
        table = local.execute("SELECT * FROM requests").to_arrow_table()
    finally:
        local.close()
    lake = Lake(cluster.new_database(), str(data), Stats(), memory_limit_mib=512, max_dimension_values=1000)
    half = table.num_rows // 2
    for part in (table.slice(0, half), table.slice(half)):
        lake.in_turn(lambda con, part=part: append(con, part, 1000))
    return lake


@pytest.fixture(scope="module")
def query_lake(
    served: Service, pg_cluster: PgCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Lake]:
    assert served.app is not None
    lake = _lake_of(served.app.store.reader(), pg_cluster, tmp_path_factory.mktemp("query-lake"))
    yield lake
    lake.close()


@pytest.fixture
def con(query_lake: Lake) -> Iterator[duckdb.DuckDBPyConnection]:
    reader = query_lake.reader()
    assert reader.execute("SELECT current_database()").fetchall() == [("lake",)]
    yield reader
    reader.close()


@pytest.fixture(scope="module")
def revenue_lake(pg_cluster: PgCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lake]:
    """test_revenue's requests in a lake (each test sets its prices and records through ``db``)."""
    local_db = tmp_path_factory.mktemp("revenue") / "um.duckdb"
    write_requests(local_db, _revenue_tests.REVENUE_REQUESTS)
    lake = _lake_of(
        duckdb.connect(str(local_db), read_only=True), pg_cluster, tmp_path_factory.mktemp("revenue-lake")
    )
    yield lake
    lake.close()


@pytest.fixture
def db(revenue_lake: Lake) -> Iterator[duckdb.DuckDBPyConnection]:
    reader = revenue_lake.reader()
    yield reader
    reader.close()
