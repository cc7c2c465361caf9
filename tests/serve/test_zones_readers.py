"""Time zones in every reader: HTTP ``?tz=`` and period names, the ``timezone`` setting as the
server's default, the CLI's ``--tz``, the clients' ``tz=``, and bad names refused."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from conftest import Service
from query_data import build, requests_for
from servers import cli

from user_metrics.client import RemoteClient
from user_metrics.query.calendar import day_start_us, local_date
from user_metrics.query.results import to_json
from user_metrics.query.timeseries import timeseries as query_timeseries
from user_metrics.query.totals import totals as query_totals
from user_metrics.query.users import users as query_users
from user_metrics.query.window import from_micros
from user_metrics.serve.local_client import LocalClient
from user_metrics.settings import Settings, SettingsError, load_settings

TRUTHS = build(seed=16, count=200)  # 2026-11-10 to 2026-11-14 UTC


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    svc = Service(tmp_path_factory.mktemp("zones") / "um.duckdb", timezone="Asia/Kolkata")
    app = svc.start()
    for req in requests_for(TRUTHS):
        assert app.ingestor.export(req).rejected_spans == 0
    yield svc
    svc.stop()


def get(served: Service, path: str) -> tuple[int, Any]:
    assert served.app is not None
    url = urlsplit(served.app.api_url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def direct(served: Service, fn: Any, *args: Any, **kwargs: Any) -> Any:
    assert served.app is not None
    with served.app.store.reader() as con:
        return to_json(fn(con, *args, **kwargs))


def test_healthz_names_the_servers_timezone(served: Service) -> None:
    """GET /healthz says the timezone setting, so a dashboard can show which zone answers are in."""
    status, body = get(served, "/healthz")
    assert status == 200 and body["timezone"] == "Asia/Kolkata"


def test_an_iso_month_in_a_zone_is_the_query_functions_answer(served: Service) -> None:
    """?since=2026-11&tz=... answers exactly what users(), totals() and timeseries() answer."""
    for tz in ("UTC", "America/New_York", "Asia/Kathmandu"):
        status, body = get(served, f"/api/v1/users?since=2026-11&tz={tz}")
        assert status == 200 and body == direct(served, query_users, "2026-11", tz=tz)
        status, body = get(served, f"/api/v1/totals?since=2026-11&tz={tz}")
        assert status == 200 and body == direct(served, query_totals, "2026-11", tz=tz)
        status, body = get(served, f"/api/v1/timeseries?since=2026-11&bucket=week&tz={tz}")
        assert status == 200 and body == direct(
            served, query_timeseries, None, "2026-11", bucket="week", tz=tz
        )
        assert body["tz"] == tz


def test_without_tz_the_timezone_setting_applies(served: Service) -> None:
    """A bare date, this_month and buckets are read in the server's zone when ?tz= is absent or empty."""
    for query in ("", "&tz="):
        status, body = get(served, f"/api/v1/totals?since=2026-11-12&until=2026-11-13{query}")
        assert status == 200
        assert (body["since"], body["until"]) == ("2026-11-11T18:30:00Z", "2026-11-12T18:30:00Z")
    status, body = get(served, "/api/v1/users?since=2026-11-12&until=2026-11-13&tz=UTC")
    assert (body["since"], body["until"]) == ("2026-11-12T00:00:00Z", "2026-11-13T00:00:00Z")
    status, body = get(served, "/api/v1/users?since=this_month")
    first = local_date(int(datetime.now(UTC).timestamp() * 1e6), "Asia/Kolkata").replace(day=1)
    assert status == 200 and body["since"] == to_json(from_micros(day_start_us(first, "Asia/Kolkata")))
    status, body = get(served, "/api/v1/timeseries?since=2026-11-10&until=2026-11-11&bucket=day")
    assert status == 200 and body["tz"] == "Asia/Kolkata"
    assert [p["start"] for p in body["points"]] == ["2026-11-09T18:30:00Z"]  # one local day


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("/api/v1/users?tz=Mars/Olympus", "tz"),
        ("/api/v1/totals?since=this_month&until=2026-11-20", "until"),
        ("/api/v1/timeseries?since=last_week&until=now", "until"),
        ("/api/v1/anomalies?tz=Nowhere", "tz"),
        ("/api/v1/users?since=2026-13", "since"),
    ],
)
def test_a_bad_zone_or_an_until_beside_a_period_is_400(served: Service, query: str, named: str) -> None:
    """400, the message naming the parameter."""
    status, body = get(served, query)
    assert status == 400 and body["error"].startswith(f"{named}:"), body


def test_remote_client_sends_tz(served: Service) -> None:
    """RemoteClient(...).users(tz=...) is ?tz=: the same answer as the query function."""
    assert served.app is not None
    with RemoteClient(served.app.api_url) as client:
        page = client.users("2026-11", tz="Asia/Kathmandu")
    assert to_json(page) == direct(served, query_users, "2026-11", tz="Asia/Kathmandu")


def test_a_bad_timezone_setting_is_refused_at_start() -> None:
    """Settings and load_settings refuse a name that is no IANA zone, naming the setting."""
    with pytest.raises(SettingsError, match="timezone must be an IANA time zone name"):
        Settings(timezone="Mars/Olympus")
    with pytest.raises(SettingsError, match="timezone"):
        load_settings(environ={"USER_METRICS_TIMEZONE": "../../etc/passwd"})
    assert load_settings(environ={"USER_METRICS_TIMEZONE": "Asia/Kolkata"}).timezone == "Asia/Kolkata"
    done = cli("serve", "--timezone", "Mars/Olympus", "--db", "/nonexistent/dir/um.duckdb")
    assert done.returncode != 0 and "timezone must be an IANA time zone name" in done.stderr


@pytest.fixture(scope="module")
def stopped(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A database file no server holds."""
    db = tmp_path_factory.mktemp("zones-file") / "um.duckdb"
    svc = Service(db)
    app = svc.start()
    for req in requests_for(TRUTHS):
        app.ingestor.export(req)
    svc.stop()
    return db


def test_cli_tz_and_the_configured_timezone_reading_the_file(stopped: Path) -> None:
    """--tz, else the timezone setting, is the zone of --since; a bad --tz exits 2 naming tz."""
    with LocalClient(stopped) as client:
        want = to_json(client.totals("2026-11", tz="Asia/Kolkata"))
        assert to_json(client.totals("2026-11")) != want  # UTC by default
    with LocalClient(stopped, timezone="Asia/Kolkata") as client:
        assert to_json(client.totals("2026-11")) == want
    done = cli(
        "totals", "--db", str(stopped), "--since", "2026-11", "--tz", "Asia/Kolkata", "--format", "json"
    )
    assert done.returncode == 0 and json.loads(done.stdout) == want, done.stderr
    env = {"USER_METRICS_TIMEZONE": "Asia/Kolkata"}
    done = cli("totals", "--db", str(stopped), "--since", "2026-11", "--format", "json", env=env)
    assert done.returncode == 0 and json.loads(done.stdout) == want, done.stderr
    done = cli("users", "--db", str(stopped), "--tz", "Mars/Olympus")
    assert done.returncode == 2 and done.stderr.startswith("user-metrics: tz: "), done.stderr
    done = cli("users", "--db", str(stopped), "--since", "this_month", "--until", "1d")
    assert done.returncode == 2 and done.stderr.startswith("user-metrics: until: "), done.stderr


def test_cli_timeseries_table_shows_starts_on_the_zones_clock(stopped: Path) -> None:
    """In a zone other than UTC the table's start column reads the local time with its offset."""
    args = ["--since", "2026-11-10", "--until", "2026-11-12", "--bucket", "day", "--tz", "Asia/Kolkata"]
    done = cli("timeseries", "--db", str(stopped), *args)
    assert done.returncode == 0, done.stderr
    assert "2026-11-10T00:00:00+05:30" in done.stdout and "days of Asia/Kolkata" in done.stdout


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/users",
        "/api/v1/users/alice",
        "/api/v1/users/alice/requests",
        "/api/v1/users/alice/timeseries",
        "/api/v1/timeseries",
        "/api/v1/properties/plan",
        "/api/v1/totals",
        "/api/v1/anomalies",
        "/api/v1/coverage",
    ],
)
def test_every_window_route_takes_tz_and_period_names(served: Service, path: str) -> None:
    """?tz= is checked on every route that takes a window (400 naming tz), and a period name
    with a good zone answers 200."""
    status, body = get(served, f"{path}?tz=Mars/Olympus")
    assert status == 400 and body["error"].startswith("tz:"), body
    status, body = get(served, f"{path}?since=2026-11&tz=America/New_York")
    assert status == 200, body
    assert body.get("since", "2026-11-01T04:00:00Z") == "2026-11-01T04:00:00Z"  # one user has no since
