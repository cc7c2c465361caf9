"""The reading commands as a user runs them: against a running server, against the file, and neither."""

from __future__ import annotations

import csv
import io
import json
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.request import urlopen

import pytest
from query_data import USERS, build, requests_for
from senders import raw_export
from servers import cli, start_server_with_api

from user_metrics.stats import Stats
from user_metrics.store.writer import Store

TRUTHS = build(seed=5, count=120)
WINDOW = ["--since", "2026-11-09T00:00:00Z", "--until", "2026-11-15T00:00:00Z"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """A `user-metrics serve` process holding known spans; yields its file and API URL."""
    db = tmp_path_factory.mktemp("cli") / "um.duckdb"
    proc, target, url = start_server_with_api(db)
    for req in requests_for(TRUTHS):
        raw_export(target, req.SerializeToString())
    yield db, url
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=30)


def http_json(url: str) -> Any:
    with urlopen(url, timeout=30) as response:
        return json.loads(response.read())


class TestWhileServing:
    def test_json_output_is_exactly_the_http_answer(self, server: tuple[Path, str]) -> None:
        """`--format json` prints what the HTTP API answers for the same arguments."""
        _, url = server
        done = cli(
            "users", "--url", url, *WINDOW, "--sort=-requests", "--property", "plan=pro", "--format", "json"
        )
        assert done.returncode == 0, done.stderr
        query = "since=2026-11-09T00:00:00Z&until=2026-11-15T00:00:00Z&sort=-requests&property=plan%3Dpro"
        assert json.loads(done.stdout) == http_json(f"{url}/api/v1/users?{query}")

    def test_without_url_or_db_the_cli_asks_the_configured_server(
        self, server: tuple[Path, str], tmp_path: Path
    ) -> None:
        """While the server holds the file, the CLI finds it at its configured API address."""
        _, url = server
        env = {
            "USER_METRICS_API_LISTEN": url.removeprefix("http://"),
            "USER_METRICS_DB": str(tmp_path / "absent.duckdb"),
        }
        done = cli("totals", *WINDOW, "--format", "json", env=env)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["requests"] == sum(1 for t in TRUTHS)

    def test_the_table_is_readable_and_marks_the_null_user(self, server: tuple[Path, str]) -> None:
        """The default table has a header, one line per user, and names the no-user row."""
        _, url = server
        done = cli("users", "--url", url, *WINDOW)
        assert done.returncode == 0, done.stderr
        lines = done.stdout.splitlines()
        assert lines[0].split()[:3] == ["user_id", "requests", "errors"]
        assert any(line.startswith("(no user id)") for line in lines)
        for user in USERS:
            if any(t.user == user for t in TRUTHS):
                assert any(line.startswith(user) for line in lines), user
        assert lines[-1].startswith(
            f"{len({t.user for t in TRUTHS})} of {len({t.user for t in TRUTHS})} users"
        )

    def test_csv_has_every_field_and_exact_costs(self, server: tuple[Path, str]) -> None:
        """CSV carries all user fields; costs keep all nine decimals."""
        _, url = server
        done = cli("users", "--url", url, *WINDOW, "--format", "csv")
        rows = list(csv.DictReader(io.StringIO(done.stdout)))
        assert "p95_latency_ms" in rows[0] and "models" in rows[0]
        by_id = {r["user_id"]: r for r in rows}
        assert by_id["alice"]["cost_usd"] == str(
            sum(t.cost for t in TRUTHS if t.user == "alice" and t.cost is not None)
        )

    @pytest.mark.parametrize(
        "args",
        [
            ["user", "zoë 🙂"],
            ["user", "x'); DROP TABLE requests; --"],
            ["timeseries", "--user", "alice", "--bucket", "hour"],
            ["timeseries"],
            ["properties", "plan"],
            ["totals", "--model", "gpt-4o-mini"],
        ],
    )
    @pytest.mark.parametrize("fmt", ["table", "json", "csv"])
    def test_every_command_in_every_format(self, server: tuple[Path, str], args: list[str], fmt: str) -> None:
        """Each reading command answers in each format."""
        _, url = server
        done = cli(*args, "--url", url, *WINDOW, "--format", fmt)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip()
        if fmt == "json":
            json.loads(done.stdout)

    def test_a_property_breakdown_says_when_values_were_left_out(self, server: tuple[Path, str]) -> None:
        """`properties KEY --limit N` prints the N costliest values and says how many there were."""
        _, url = server
        done = cli("properties", "plan", "--limit", "1", "--url", url, *WINDOW)
        assert done.returncode == 0, done.stderr
        assert len(done.stdout.splitlines()) == 4  # header, rule, one value, the note
        assert done.stdout.splitlines()[-1].endswith("the 1 costliest of 4 values (raise --limit)")
        done = cli("properties", "plan", "--limit", "10001", "--url", url, *WINDOW)
        assert done.returncode == 2 and "limit" in done.stderr

    def test_sql_runs_and_refuses(self, server: tuple[Path, str]) -> None:
        """`user-metrics sql` runs a SELECT and refuses anything else with exit status 2."""
        _, url = server
        done = cli("sql", "SELECT count(*) AS n FROM requests", "--url", url, "--format", "json")
        assert json.loads(done.stdout)["rows"] == [[len(TRUTHS)]]
        done = cli("sql", "DROP TABLE requests", "--url", url)
        assert done.returncode == 2 and "not DROP" in done.stderr

    def test_an_unknown_user_exits_1_and_a_bad_window_2(self, server: tuple[Path, str]) -> None:
        """Not found is a failure (1); a bad argument is a usage error (2); both say why."""
        _, url = server
        done = cli("user", "nobody", "--url", url)
        assert done.returncode == 1 and "nobody" in done.stderr
        done = cli("users", "--url", url, "--since", "last tuesday")
        assert done.returncode == 2 and "since" in done.stderr

    @pytest.mark.parametrize(
        ("args", "named"),
        [
            (["user", ""], "user_id"),
            (["requests", ""], "user_id"),
            (["timeseries", "--user", ""], "user_id"),
            (["properties", ""], "key"),
            (["users", "--offset", "99999999999999999999999"], "offset"),
        ],
    )
    def test_an_empty_id_or_an_offset_out_of_range_is_a_usage_error(
        self, server: tuple[Path, str], args: list[str], named: str
    ) -> None:
        """Exit 2 with one line naming the argument (it used to be a KeyError traceback, or a 500)."""
        _, url = server
        done = cli(*args, "--url", url)
        assert done.returncode == 2 and done.stderr.startswith(f"user-metrics: {named}: "), done.stderr
        assert len(done.stderr.splitlines()) == 1


def test_reads_the_file_when_no_server_runs(tmp_path: Path) -> None:
    """With the server stopped, --db (or the configured file) is opened read-only, with the same answer."""
    db = tmp_path / "um.duckdb"
    proc, target, url = start_server_with_api(db)
    for req in requests_for(TRUTHS):
        raw_export(target, req.SerializeToString())
    served = cli("users", "--url", url, *WINDOW, "--format", "json").stdout
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=30)
    from_file = cli("users", "--db", str(db), *WINDOW, "--format", "json")
    assert from_file.returncode == 0, from_file.stderr
    assert json.loads(from_file.stdout) == json.loads(served)
    env = {"USER_METRICS_DB": str(db), "USER_METRICS_API_LISTEN": "127.0.0.1:9"}  # nothing listens on 9
    fallback = cli("users", *WINDOW, "--format", "json", env=env)
    assert fallback.returncode == 0, fallback.stderr
    assert json.loads(fallback.stdout) == json.loads(served)
    for args, named in ((["user", ""], "user_id"), (["users", "--offset", str(2**63)], "offset")):
        done = cli(*args, "--db", str(db))
        assert done.returncode == 2 and done.stderr.startswith(f"user-metrics: {named}: "), done.stderr


def test_says_clearly_when_neither_server_nor_file_is_there(tmp_path: Path) -> None:
    """No server and no file: exit 1 naming both places it looked."""
    env = {"USER_METRICS_API_LISTEN": "127.0.0.1:9", "USER_METRICS_DB": str(tmp_path / "none.duckdb")}
    done = cli("users", env=env)
    assert done.returncode == 1
    assert "127.0.0.1:9" in done.stderr and "none.duckdb" in done.stderr and "serve" in done.stderr


def test_a_file_held_by_the_server_is_explained(tmp_path: Path) -> None:
    """--db on a file the server holds says to ask the server instead, with the CLI's flag for it."""
    db = tmp_path / "um.duckdb"
    proc, _, _ = start_server_with_api(db)
    try:
        done = cli("users", "--db", str(db))
        assert done.returncode == 1 and "ask it instead, with --url http://HOST:PORT" in done.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)


@pytest.mark.parametrize(
    ("flags", "env", "config", "expected"),
    [
        ([], {}, "", "1.0 GiB"),
        (["--memory-limit-mib", "256"], {"USER_METRICS_MEMORY_LIMIT_MIB": "300"}, "", "256.0 MiB"),
        ([], {"USER_METRICS_MEMORY_LIMIT_MIB": "300"}, "memory_limit_mib = 200\n", "300.0 MiB"),
        ([], {}, "memory_limit_mib = 200\n", "200.0 MiB"),
    ],
    ids=["default", "flag", "environment", "config"],
)
def test_reading_the_file_keeps_to_memory_limit_mib(
    tmp_path: Path, flags: list[str], env: dict[str, str], config: str, expected: str
) -> None:
    """`sql --db` runs DuckDB with the memory_limit_mib setting (flag > env > config > default), as serve does."""
    db = tmp_path / "um.duckdb"
    Store(db, Stats()).close()
    if config:
        (tmp_path / "um.toml").write_text(config)
        flags = [*flags, "--config", str(tmp_path / "um.toml")]
    query = "SELECT current_setting('memory_limit') AS m"
    done = cli("sql", query, "--db", str(db), "--format", "json", *flags, env=env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["rows"] == [[expected]]


def test_a_memory_limit_too_small_is_a_usage_error(tmp_path: Path) -> None:
    """--memory-limit-mib is validated like the setting: below 128 (but not 0) exits 2."""
    db = tmp_path / "um.duckdb"
    Store(db, Stats()).close()
    done = cli("sql", "SELECT 1", "--db", str(db), "--memory-limit-mib", "64")
    assert done.returncode == 2 and "memory_limit_mib" in done.stderr
