"""`user-metrics revenue import FILE` and `revenue list`, run as a user runs them: against a
running server and against the file."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest
from servers import cli, start_server_with_api

from user_metrics.stats import Stats
from user_metrics.store.writer import Store

STRIPE = (
    "id,Customer,Amount Paid,Period Start (UTC),Period End (UTC),Currency,Status\n"
    "in_1,cus_A,20.00,2026-11-01 00:00:00,2026-12-01 00:00:00,usd,paid\n"
    "in_2,cus_B,-3.25,2026-11-01 00:00:00,2026-11-02 00:00:00,usd,paid\n"
)
MAPS = [
    "--map",
    "user_id=Customer",
    "--map",
    "amount=Amount Paid",
    "--map",
    "period_start=Period Start (UTC)",
    "--map",
    "period_end=Period End (UTC)",
]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    db = tmp_path / "um.duckdb"
    proc, _, url = start_server_with_api(db)
    yield db, url
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)


def test_a_stripe_export_imports_through_the_server_and_again_changes_nothing(
    server: tuple[Path, str], tmp_path: Path
) -> None:
    """--map names the export's columns; the second import counts every record unchanged."""
    _, url = server
    export = tmp_path / "invoices.csv"
    export.write_text(STRIPE)
    done = cli("revenue", "import", str(export), "--url", url, *MAPS)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "2 records imported, 0 unchanged (imported before)\n"
    again = cli("revenue", "import", str(export), "--url", url, *MAPS)
    assert again.stdout == "0 records imported, 2 unchanged (imported before)\n"
    listed = cli("revenue", "list", "--url", url, "--format", "json")
    data = json.loads(listed.stdout)
    assert [(r["id"], r["amount_usd"], r["source"]) for r in data["records"]] == [
        ("in_1", "20.000000000", "invoices.csv"),
        ("in_2", "-3.250000000", "invoices.csv"),
    ]
    table = cli("revenue", "list", "--url", url, "--user", "cus_A")
    assert "in_1" in table.stdout and "in_2" not in table.stdout and "1 of 1 records" in table.stdout


def test_a_bad_row_is_refused_with_its_row_and_nothing_is_imported(
    server: tuple[Path, str], tmp_path: Path
) -> None:
    _, url = server
    export = tmp_path / "invoices.csv"
    export.write_text(STRIPE + "in_3,cus_C,5.00,2026-11-01 00:00:00,2026-12-01 00:00:00,eur,paid\n")
    done = cli("revenue", "import", str(export), "--url", url, *MAPS)
    assert done.returncode == 2
    assert "1 bad row, nothing imported" in done.stderr
    assert "row 4: currency: only USD is imported, got 'eur'" in done.stderr
    assert json.loads(cli("revenue", "list", "--url", url, "--format", "json").stdout)["total"] == 0


def test_the_file_without_a_server_json_and_a_zone(tmp_path: Path) -> None:
    """--db: the CLI writes the file with the store's writer; bare dates read in --tz."""
    db = tmp_path / "um.duckdb"
    Store(db, Stats()).close()
    rows = tmp_path / "rows.json"
    rows.write_text(
        json.dumps(
            {
                "records": [
                    {"user_id": "u", "amount": "12", "period_start": "2026-11-01", "period_end": "2026-12-01"}
                ]
            }
        )
    )
    done = cli("revenue", "import", str(rows), "--db", str(db), "--tz", "America/New_York")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("1 records imported")
    with duckdb.connect(str(db), read_only=True) as con:
        ((start_us, end_us, source),) = con.execute("SELECT start_us, end_us, source FROM revenue").fetchall()
    assert (start_us, end_us) == (1_793_505_600_000_000, 1_796_101_200_000_000)  # EDT, then EST midnights
    assert source == "rows.json"


def test_a_missing_file_and_a_bad_map(tmp_path: Path) -> None:
    db = tmp_path / "um.duckdb"
    Store(db, Stats()).close()
    done = cli("revenue", "import", str(tmp_path / "none.csv"), "--db", str(db))
    assert done.returncode == 2 and "cannot read" in done.stderr
    (tmp_path / "a.csv").write_text(STRIPE)
    done = cli("revenue", "import", str(tmp_path / "a.csv"), "--db", str(db), "--map", "Customer")
    assert done.returncode == 2 and "--map: must be FIELD=COLUMN" in done.stderr


def test_import_sends_the_configured_ingest_token_and_list_the_read_token(tmp_path: Path) -> None:
    """With tokens configured, `revenue import` (a write) authenticates with the first ingest
    token and `revenue list` with the first read token; a read token given for an import is
    refused (exit 1, saying an ingest token is needed) and imports nothing."""
    tokens = {
        "USER_METRICS_INGEST_TOKENS": "ingest-token-0123456789abcdef",
        "USER_METRICS_READ_TOKENS": "read-token-0123456789abcdef",
    }
    proc, _, url = start_server_with_api(tmp_path / "um.duckdb", env=tokens)
    try:
        export = tmp_path / "invoices.csv"
        export.write_text(STRIPE)
        refused = cli(
            "revenue",
            "import",
            str(export),
            "--url",
            url,
            *MAPS,
            "--token",
            tokens["USER_METRICS_READ_TOKENS"],
        )
        assert refused.returncode == 1
        assert "needs an ingest token" in refused.stderr
        done = cli("revenue", "import", str(export), "--url", url, *MAPS, env=tokens)
        assert done.returncode == 0, done.stderr
        listed = cli("revenue", "list", "--url", url, "--format", "json", env=tokens)
        assert listed.returncode == 0, listed.stderr
        assert [r["id"] for r in json.loads(listed.stdout)["records"]] == ["in_1", "in_2"]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
