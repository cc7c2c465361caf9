"""The gRPC query service against a real server: every rpc answers what the query layer answers."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import grpc
import pytest
from conftest import Service
from google.protobuf.message import Message
from otlp import T0, chat, request, span
from profit import Record, add_revenue, ratio

from user_metrics.ingest.ingestor import Ingestor
from user_metrics.query import results
from user_metrics.query.anomalies import anomalies as query_anomalies
from user_metrics.query.coverage import coverage as query_coverage
from user_metrics.query.properties import by_property as query_by_property
from user_metrics.query.timeseries import timeseries as query_timeseries
from user_metrics.query.totals import totals as query_totals
from user_metrics.query.users import recent_requests as query_recent_requests
from user_metrics.query.users import user as query_user
from user_metrics.query.users import users as query_users
from user_metrics.v1 import user_metrics_pb2 as pb
from user_metrics.v1.user_metrics_pb2_grpc import UserMetricsServiceStub

ROOT = Path(__file__).resolve().parents[2]
REGENERATE = (
    "python -m grpc_tools.protoc -Iproto --python_out=src --pyi_out=src --grpc_python_out=src "
    "proto/user_metrics/v1/user_metrics.proto"
)
STUBS = ("user_metrics_pb2.py", "user_metrics_pb2.pyi", "user_metrics_pb2_grpc.py")

H = 3600 * 10**9
D = 24 * H
# T0 is 2026-11-18T11:06:40Z; the window's edges are not on hour or day boundaries.
SINCE, UNTIL = "2026-11-16T05:30:00Z", "2026-11-19T17:45:00.5+00:00"
WINDOW = pb.Window(since=SINCE, until=UNTIL)
WEIRD = 'O\'Brien "quoted" ünïcødé 用户  two  spaces; DROP TABLE users'
UNKNOWN_MODEL = "acme-unreleased-model"
SHOP = {"service.name": "shop", "deployment.environment.name": "prod"}
BILLING = {"service.name": "billing", "deployment.environment.name": "staging"}
# (resource, user, model, input, output, start, duration ms, error, plan)
CALLS: list[tuple[dict[str, str], str | None, str, int, int, int, int, bool, str | None]] = [
    (SHOP, "alice", "gpt-4o-mini", 1000, 200, T0 - D, 100, False, "pro"),
    (SHOP, "alice", "gpt-4o-mini", 300, 100, T0, 250, True, "pro"),
    (SHOP, "alice", "gpt-4o", 2000, 500, T0 + H, 900, False, "pro"),
    (SHOP, "alice", "gpt-4o", 5000, 5000, T0 - 5 * D, 300, False, "pro"),  # before the window
    (BILLING, "bob", "gpt-4o", 800, 400, T0 + 2 * H, 400, False, "free"),
    (BILLING, "bob", UNKNOWN_MODEL, 100, 100, T0 + D, 1200, False, None),
    (SHOP, WEIRD, "gpt-4o-mini", 1, 0, T0 + 3 * H, 50, False, "free"),  # costs $0.00000015
    (SHOP, "carol", UNKNOWN_MODEL, 10, 10, T0 - 2 * D + H // 2, 75, False, None),  # no known price
    (SHOP, None, "gpt-4o-mini", 50, 50, T0 + H // 6, 120, False, "pro"),
    (SHOP, None, "gpt-4o-mini", 70, 30, T0 - D - 3 * H, 180, False, None),
]

Call = Callable[..., Any]


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """A real App (conftest's Service) holding CALLS, shared by the module: the tests only read."""
    svc = Service(tmp_path_factory.mktemp("query_grpc") / "user_metrics.duckdb")
    app = svc.start()
    try:
        # A fixed clock: the spans are accepted whatever today's date is.
        ingestor = Ingestor(app.conventions, app.pricer, app.store, app.stats, clock=lambda: T0 + 7 * D)
        for resource, user, model, inp, out, start, ms, error, plan in CALLS:
            attrs = chat(user, model, inp, out, **({"property.plan": plan} if plan else {}))
            sent = span(attrs, start=start, duration_ns=ms * 10**6, error=error)
            result = ingestor.export(request([sent], resource))
            assert result.rejected_spans == 0, result.error_message
        yield svc
    finally:
        svc.stop()


@pytest.fixture(scope="module")
def stub(service: Service) -> Iterator[UserMetricsServiceStub]:
    """A client of the service's own gRPC server: the port that also takes OTLP Export."""
    channel = grpc.insecure_channel(service.target)
    try:
        yield UserMetricsServiceStub(channel)
    finally:
        channel.close()


@pytest.fixture
def con(service: Service) -> Iterator[duckdb.DuckDBPyConnection]:
    """A reader of the same store, for calling the query functions directly."""
    assert service.app is not None
    reader = service.app.store.reader()
    yield reader
    reader.close()


def assert_mirrors(message: Message, result: Any, path: str = "") -> None:
    """Each field of the result dataclass is in the message: exact decimal text, unset for None."""
    for field in dataclasses.fields(result):
        expected, where = getattr(result, field.name), f"{path}{field.name}"
        got = getattr(message, field.name)
        has_presence = message.DESCRIPTOR.fields_by_name[field.name].has_presence
        if expected is None:
            assert has_presence and not message.HasField(field.name), f"{where}: {got!r} should be unset"
        elif isinstance(expected, dict):
            assert dict(got) == expected, where  # a map field
        elif isinstance(expected, tuple) and not all(dataclasses.is_dataclass(e) for e in expected):
            assert tuple(got) == expected, where  # repeated scalars
        elif isinstance(expected, tuple):
            assert len(got) == len(expected), where
            for i, (item, expected_item) in enumerate(zip(got, expected, strict=True)):
                assert_mirrors(item, expected_item, f"{where}[{i}].")
        elif isinstance(expected, datetime):
            assert message.HasField(field.name) and got.ToDatetime(tzinfo=UTC) == expected, where
        elif isinstance(expected, Decimal):
            # The same digits and scale, in plain notation (never "1.5E-7" or "0E-9").
            assert Decimal(got).as_tuple() == expected.as_tuple() and "E" not in got.upper(), (where, got)
        else:
            assert not has_presence or message.HasField(field.name), where
            assert type(got) is type(expected) and got == expected, (where, got, expected)


def rpc_error(call: Call, message: Message) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call(message, timeout=10)
    return info.value


def test_messages_have_the_result_fields() -> None:
    """Every response message has the fields of its result dataclass, same names, same order."""
    pairs = [
        (results.UserPage, pb.UserPage),
        (results.UserStats, pb.UserStats),
        (results.ModelUsage, pb.ModelUsage),
        (results.Timeseries, pb.Timeseries),
        (results.Point, pb.Point),
        (results.PropertyBreakdown, pb.PropertyBreakdown),
        (results.PropertyValue, pb.PropertyValue),
        (results.Totals, pb.Totals),
        (results.RecentRequests, pb.RecentRequests),
        (results.RequestRecord, pb.RequestRecord),
        (results.PropertyKeys, pb.PropertyKeys),
        (results.Anomalies, pb.Anomalies),
        (results.Anomaly, pb.Anomaly),
        (results.Coverage, pb.Coverage),
        (results.ScopeCoverage, pb.ScopeCoverage),
        (results.ScopeKeys, pb.ScopeKeys),
        (results.KeyCount, pb.KeyCount),
    ]
    for cls, message in pairs:
        assert [f.name for f in dataclasses.fields(cls)] == [f.name for f in message.DESCRIPTOR.fields], cls


@pytest.mark.parametrize(
    ("sort", "limit", "offset"),
    [("", 0, 0), ("-cost_usd", 2, 1), ("user_id", 100, 0), ("-p95_latency_ms", 3, 0), ("requests", 10, 2)],
)
def test_list_users_matches_query(
    stub: UserMetricsServiceStub, con: duckdb.DuckDBPyConnection, sort: str, limit: int, offset: int
) -> None:
    """ListUsers answers query_users field for field (empty sort and zero limit are the defaults)."""
    page = stub.ListUsers(
        pb.ListUsersRequest(window=WINDOW, sort=sort, limit=limit, offset=offset), timeout=10
    )
    expected = query_users(con, SINCE, UNTIL, sort=sort or "-cost_usd", limit=limit or 100, offset=offset)
    assert_mirrors(page, expected)
    assert page.total == 5  # alice, bob, carol, WEIRD and the null user


def test_get_user_matches_query(stub: UserMetricsServiceStub, con: duckdb.DuckDBPyConnection) -> None:
    """GetUser answers query_user for every user, including an unpriced one (cost_usd unset)."""
    for user_id in ("alice", "bob", "carol", WEIRD):
        got = stub.GetUser(pb.GetUserRequest(user_id=user_id, window=WINDOW), timeout=10)
        assert_mirrors(got, query_user(con, user_id, SINCE, UNTIL))
    alice = stub.GetUser(pb.GetUserRequest(user_id="alice", window=WINDOW), timeout=10)
    assert (alice.requests, alice.errors, alice.input_tokens, alice.active_days) == (3, 1, 3300, 2)
    carol = stub.GetUser(pb.GetUserRequest(user_id="carol", window=WINDOW), timeout=10)
    assert not carol.HasField("cost_usd") and carol.unpriced_requests == 1
    assert not carol.models[0].HasField("cost_usd") and carol.models[0].model == UNKNOWN_MODEL


def test_user_id_with_quotes_unicode_and_spaces(stub: UserMetricsServiceStub) -> None:
    """A user id with quotes, non-ASCII and spaces round-trips, and its tiny cost is exact plain text."""
    got = stub.GetUser(pb.GetUserRequest(user_id=WEIRD, window=WINDOW), timeout=10)
    assert got.user_id == WEIRD and got.requests == 1
    assert got.cost_usd == "0.000000150"  # 1 token of gpt-4o-mini; str(Decimal) would say 1.50E-7
    series = stub.GetTimeseries(pb.GetTimeseriesRequest(user_id=WEIRD, window=WINDOW), timeout=10)
    assert series.user_id == WEIRD and sum(p.requests for p in series.points) == 1


def test_anonymous_user(stub: UserMetricsServiceStub, con: duckdb.DuckDBPyConnection) -> None:
    """GetUser with anonymous set answers the requests without a user id, user_id left unset."""
    got = stub.GetUser(pb.GetUserRequest(anonymous=True, window=WINDOW), timeout=10)
    assert_mirrors(got, query_user(con, None, SINCE, UNTIL))
    assert not got.HasField("user_id") and got.requests == 2
    page = stub.ListUsers(pb.ListUsersRequest(window=WINDOW, sort="user_id"), timeout=10)
    assert not page.users[-1].HasField("user_id")  # the null user sorts last


def test_get_user_needs_exactly_one_of_user_id_and_anonymous(stub: UserMetricsServiceStub) -> None:
    """GetUser with neither user_id nor anonymous, or with both, is INVALID_ARGUMENT naming user_id."""
    for message in (pb.GetUserRequest(window=WINDOW), pb.GetUserRequest(user_id="alice", anonymous=True)):
        error = rpc_error(stub.GetUser, message)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "user_id" in error.details()


@pytest.mark.parametrize("bucket", ["hour", "day"])
@pytest.mark.parametrize("user_id", [None, "alice", "bob"])
def test_timeseries_matches_query(
    stub: UserMetricsServiceStub, con: duckdb.DuckDBPyConnection, bucket: str, user_id: str | None
) -> None:
    """GetTimeseries answers query_timeseries per hour and day, for the application and for one user."""
    message = pb.GetTimeseriesRequest(user_id=user_id, window=WINDOW, bucket=bucket)
    got = stub.GetTimeseries(message, timeout=10)
    expected = query_timeseries(con, user_id, SINCE, UNTIL, bucket=bucket)
    assert_mirrors(got, expected)
    assert got.HasField("user_id") == (user_id is not None)
    assert any(p.cost_usd == "0.000000000" for p in got.points)  # empty buckets: zero, not "0E-9"


def test_timeseries_defaults_to_days(stub: UserMetricsServiceStub) -> None:
    """An empty bucket is a daily series."""
    got = stub.GetTimeseries(pb.GetTimeseriesRequest(window=WINDOW), timeout=10)
    assert got.bucket == "day" and len(got.points) == 4  # 16th to 19th November


def test_property_breakdown_matches_query(
    stub: UserMetricsServiceStub, con: duckdb.DuckDBPyConnection
) -> None:
    """GetPropertyBreakdown answers query_by_property; requests without the property have value unset."""
    got = stub.GetPropertyBreakdown(pb.GetPropertyBreakdownRequest(key="Plan", window=WINDOW), timeout=10)
    assert_mirrors(got, query_by_property(con, "Plan", SINCE, UNTIL))
    assert got.key == "plan"
    assert {v.value if v.HasField("value") else None for v in got.values} == {"pro", "free", None}
    assert (got.total_values, got.truncated) == (3, False)
    cut = stub.GetPropertyBreakdown(
        pb.GetPropertyBreakdownRequest(key="plan", window=WINDOW, limit=1), timeout=10
    )
    assert_mirrors(cut, query_by_property(con, "plan", SINCE, UNTIL, limit=1))
    assert (len(cut.values), cut.total_values, cut.truncated) == (1, 3, True)


@pytest.mark.parametrize(
    ("user_id", "limit"), [("alice", 0), ("alice", 2), ("bob", 5), (WEIRD, 1), (None, 0)]
)
def test_recent_requests_matches_query(
    stub: UserMetricsServiceStub, con: duckdb.DuckDBPyConnection, user_id: str | None, limit: int
) -> None:
    """GetRecentRequests answers query_recent_requests (limit 0: the default 20; anonymous: no user)."""
    message = pb.GetRecentRequestsRequest(window=WINDOW, limit=limit)
    if user_id is None:
        message.anonymous = True
    else:
        message.user_id = user_id
    got = stub.GetRecentRequests(message, timeout=10)
    expected = query_recent_requests(con, user_id, SINCE, UNTIL, limit=limit or 20)
    assert_mirrors(got, expected)
    assert len(got.requests) == len(expected.requests) > 0
    times = [r.start_time.ToDatetime() for r in got.requests]
    assert times == sorted(times, reverse=True)


def test_recent_requests_needs_a_user_and_a_sane_limit(stub: UserMetricsServiceStub) -> None:
    for message, named in (
        (pb.GetRecentRequestsRequest(window=WINDOW), "user_id"),
        (pb.GetRecentRequestsRequest(user_id="alice", anonymous=True), "user_id"),
        (pb.GetRecentRequestsRequest(user_id="alice", limit=5000), "limit"),
    ):
        error = rpc_error(stub.GetRecentRequests, message)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and error.details().startswith(named)
    error = rpc_error(stub.GetRecentRequests, pb.GetRecentRequestsRequest(user_id="nobody"))
    assert error.code() == grpc.StatusCode.NOT_FOUND


def test_property_keys_and_search(stub: UserMetricsServiceStub, con: duckdb.DuckDBPyConnection) -> None:
    """ListPropertyKeys lists plan; ListUsers with search keeps the matching ids only."""
    assert list(stub.ListPropertyKeys(pb.ListPropertyKeysRequest(), timeout=10).keys) == ["plan"]
    page = stub.ListUsers(pb.ListUsersRequest(window=WINDOW, search="ÜNÏ"), timeout=10)
    assert_mirrors(page, query_users(con, SINCE, UNTIL, search="ÜNÏ"))
    assert [u.user_id for u in page.users] == [WEIRD] and page.total == 1


def test_totals_matches_query(stub: UserMetricsServiceStub, con: duckdb.DuckDBPyConnection) -> None:
    """GetTotals answers query_totals for the window; the request before it does not count."""
    got = stub.GetTotals(pb.GetTotalsRequest(window=WINDOW), timeout=10)
    assert_mirrors(got, query_totals(con, SINCE, UNTIL))
    assert (got.users, got.anonymous_requests, got.requests, got.unpriced_requests) == (4, 2, 9, 2)
    assert got.since.ToDatetime(tzinfo=UTC) == datetime(2026, 11, 16, 5, 30, tzinfo=UTC)
    assert got.until.ToDatetime(tzinfo=UTC) == datetime(2026, 11, 19, 17, 45, 0, 500_000, tzinfo=UTC)


@pytest.mark.parametrize(
    ("filters", "kwargs"),
    [
        (pb.Filters(model="gpt-4o"), {"model": "gpt-4o"}),
        (pb.Filters(service="billing"), {"service": "billing"}),
        (
            pb.Filters(environment="prod", properties={"PLAN": "pro"}),
            {"environment": "prod", "properties": {"plan": "pro"}},
        ),
    ],
)
def test_filters_reach_every_rpc(
    stub: UserMetricsServiceStub, con: duckdb.DuckDBPyConnection, filters: pb.Filters, kwargs: dict[str, Any]
) -> None:
    """Model, service, environment and property filters give the answers of the query functions."""
    totals = stub.GetTotals(pb.GetTotalsRequest(window=WINDOW, filters=filters), timeout=10)
    assert_mirrors(totals, query_totals(con, SINCE, UNTIL, **kwargs))
    assert 0 < totals.requests < 9
    page = stub.ListUsers(pb.ListUsersRequest(window=WINDOW, filters=filters), timeout=10)
    assert_mirrors(page, query_users(con, SINCE, UNTIL, **kwargs))
    user = stub.GetUser(pb.GetUserRequest(user_id="alice", window=WINDOW, filters=filters), timeout=10)
    assert_mirrors(user, query_user(con, "alice", SINCE, UNTIL, **kwargs))
    series = stub.GetTimeseries(
        pb.GetTimeseriesRequest(window=WINDOW, filters=filters, bucket="hour"), timeout=10
    )
    assert_mirrors(series, query_timeseries(con, None, SINCE, UNTIL, bucket="hour", **kwargs))
    breakdown = stub.GetPropertyBreakdown(
        pb.GetPropertyBreakdownRequest(key="plan", window=WINDOW, filters=filters), timeout=10
    )
    assert_mirrors(breakdown, query_by_property(con, "plan", SINCE, UNTIL, **kwargs))


def test_unknown_user_is_not_found(stub: UserMetricsServiceStub) -> None:
    """A user id that never made a request is NOT_FOUND, in GetUser and GetTimeseries."""
    for call, message in (
        (stub.GetUser, pb.GetUserRequest(user_id="nobody", window=WINDOW)),
        (stub.GetTimeseries, pb.GetTimeseriesRequest(user_id="nobody", window=WINDOW)),
    ):
        error = rpc_error(call, message)
        assert error.code() == grpc.StatusCode.NOT_FOUND and "nobody" in error.details()


def test_bad_since_is_invalid_argument(stub: UserMetricsServiceStub) -> None:
    """A since that is neither a duration nor an instant is INVALID_ARGUMENT, the message naming since."""
    bad = pb.Window(since="the day before")
    for call, message in (
        (stub.ListUsers, pb.ListUsersRequest(window=bad)),
        (stub.GetUser, pb.GetUserRequest(user_id="alice", window=bad)),
        (stub.GetTimeseries, pb.GetTimeseriesRequest(window=bad)),
        (stub.GetPropertyBreakdown, pb.GetPropertyBreakdownRequest(key="plan", window=bad)),
        (stub.GetTotals, pb.GetTotalsRequest(window=bad)),
    ):
        error = rpc_error(call, message)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error.details().startswith("since:") and "the day before" in error.details()


@pytest.mark.parametrize(
    ("call", "message", "named"),
    [
        ("ListUsers", pb.ListUsersRequest(window=WINDOW, sort="-popularity"), "sort"),
        ("ListUsers", pb.ListUsersRequest(window=WINDOW, sort="models"), "sort"),
        ("ListUsers", pb.ListUsersRequest(window=WINDOW, limit=-1), "limit"),
        ("ListUsers", pb.ListUsersRequest(window=WINDOW, offset=-5), "offset"),
        ("ListUsers", pb.ListUsersRequest(window=WINDOW, limit=2**31 - 1), "limit"),
        ("GetRecentRequests", pb.GetRecentRequestsRequest(user_id="alice", limit=2**31 - 1), "limit"),
        ("GetRecentRequests", pb.GetRecentRequestsRequest(user_id="alice", limit=-1), "limit"),
        ("GetTimeseries", pb.GetTimeseriesRequest(user_id="", window=WINDOW), "user_id"),
        ("GetAnomalies", pb.GetAnomaliesRequest(threshold=float("nan")), "threshold"),
        ("GetAnomalies", pb.GetAnomaliesRequest(threshold=float("inf")), "threshold"),
        ("GetAnomalies", pb.GetAnomaliesRequest(threshold=-1.0), "threshold"),
        ("GetTimeseries", pb.GetTimeseriesRequest(window=WINDOW, bucket="fortnight"), "bucket"),
        ("GetPropertyBreakdown", pb.GetPropertyBreakdownRequest(window=WINDOW), "key"),
        ("GetPropertyBreakdown", pb.GetPropertyBreakdownRequest(key="plan", limit=10_001), "limit"),
    ],
)
def test_bad_arguments_are_invalid_argument(
    stub: UserMetricsServiceStub, call: str, message: Message, named: str
) -> None:
    """A bad sort, limit, offset, bucket, user id, threshold or property key is INVALID_ARGUMENT
    naming the argument (protobuf's int32 and double reach every value the query layer refuses)."""
    error = rpc_error(getattr(stub, call), message)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and error.details().startswith(f"{named}:")


def test_an_undecodable_request_is_invalid_argument(service: Service) -> None:
    """Bytes that are not the method's request message get INVALID_ARGUMENT naming the message type."""
    with grpc.insecure_channel(service.target) as channel:
        list_users = channel.unary_unary("/user_metrics.v1.UserMetricsService/ListUsers")
        with pytest.raises(grpc.RpcError) as info:
            list_users(b"\xff\xff\xff\x0f garbage", timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "user_metrics.v1.ListUsersRequest" in info.value.details()


def test_committed_stubs_are_current(tmp_path: Path) -> None:
    """The committed stubs are byte for byte what the regeneration command makes of the .proto."""
    out = [f"--{kind}_out={tmp_path}" for kind in ("python", "pyi", "grpc_python")]
    command = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        "-Iproto",
        *out,
        "proto/user_metrics/v1/user_metrics.proto",
    ]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    from grpc_tools import grpc_version

    for name in STUBS:
        fresh = (tmp_path / "user_metrics" / "v1" / name).read_bytes()
        committed = (ROOT / "src" / "user_metrics" / "v1" / name).read_bytes()
        assert committed == fresh, (
            f"src/user_metrics/v1/{name} is stale (or was made by another grpcio-tools than the installed "
            f"{grpc_version.VERSION}): regenerate from the repository root with\n    {REGENERATE}"
        )


# ---- profitability and time zones (issue 16) -----------------------------------------------------

PROFIT = ("revenue_usd", "margin_usd", "margin_ratio")
PAID_WINDOW = pb.Window(since="2026-11-17T00:00:00Z", until="2026-11-20T00:00:00Z")
PAID_SINCE, PAID_UNTIL = PAID_WINDOW.since, PAID_WINDOW.until
# (user, model, input, output, start, plan): all inside PAID_WINDOW; carol's model has no price.
PAID_CALLS = [
    ("alice", "gpt-4o-mini", 1000, 200, T0, "pro"),
    ("alice", "gpt-4o-mini", 300, 100, T0 + H, "pro"),
    ("bob", "gpt-4o", 800, 400, T0 + 2 * H, "free"),
    ("carol", UNKNOWN_MODEL, 10, 10, T0 + 3 * H, None),
]
NOV = {day: datetime(2026, 11, day, tzinfo=UTC) for day in range(1, 31)}
RECORDS = [
    Record("a1", "alice", "20.000000000", NOV[18].replace(hour=12)),
    # A third of this period lies in the window: 10.000000001 / 3 = 3.3333333336..., half-even.
    Record("a2", "alice", "10.000000001", NOV[19], datetime(2026, 11, 22, tzinfo=UTC)),
    Record("a3", "alice", "100", NOV[10]),  # before the window
    Record("b1", "bob", "0.001", NOV[18].replace(hour=13)),  # less than bob's cost: a loss
    Record("c1", "carol", "5", NOV[18].replace(hour=14)),  # carol's cost is unknown: counts as 0
    Record("d1", "dave", "2", NOV[17]),  # dave paid but made no request
]
REVENUE = {
    "alice": Decimal("23.333333334"),
    "bob": Decimal("0.001000000"),
    "carol": Decimal("5.000000000"),
    "dave": Decimal("2.000000000"),
}


def unset(message: Message, fields: tuple[str, ...] = PROFIT) -> bool:
    return not any(message.HasField(name) for name in fields)


def assert_profit(message: Any, revenue: Decimal, cost: Decimal) -> None:
    """revenue_usd is this exact decimal text, margin_usd revenue - cost, margin_ratio their ratio."""
    assert message.revenue_usd == str(revenue), message.revenue_usd
    assert Decimal(message.margin_usd) == revenue - cost and "E" not in message.margin_usd.upper()
    expected = ratio(revenue - cost, revenue)
    if expected is None:
        assert not message.HasField("margin_ratio")
    else:
        assert message.margin_ratio == pytest.approx(expected, rel=1e-12)


@pytest.fixture(scope="module")
def paid(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """A service holding PAID_CALLS and the imported revenue RECORDS (written to its database)."""
    svc = Service(tmp_path_factory.mktemp("paid_grpc") / "user_metrics.duckdb")
    app = svc.start()
    try:
        ingestor = Ingestor(app.conventions, app.pricer, app.store, app.stats, clock=lambda: T0 + 7 * D)
        for user_id, model, inp, out, start, plan in PAID_CALLS:
            attrs = chat(user_id, model, inp, out, **({"property.plan": plan} if plan else {}))
            result = ingestor.export(request([span(attrs, start=start)], SHOP))
            assert result.rejected_spans == 0, result.error_message
        con = app.store.reader()
        try:
            add_revenue(con, RECORDS)
        finally:
            con.close()
        yield svc
    finally:
        svc.stop()


@pytest.fixture(scope="module")
def paid_stub(paid: Service) -> Iterator[UserMetricsServiceStub]:
    with grpc.insecure_channel(paid.target) as channel:
        yield UserMetricsServiceStub(channel)


@pytest.fixture
def paid_con(paid: Service) -> Iterator[duckdb.DuckDBPyConnection]:
    """A reader of the paid store."""
    assert paid.app is not None
    reader = paid.app.store.reader()
    yield reader
    reader.close()


def test_profit_fields_are_unset_without_revenue(stub: UserMetricsServiceStub) -> None:
    """Without any revenue source, revenue_usd, margin_usd and margin_ratio are unset (null), not zero,
    on users, one user, property values and totals."""
    page = stub.ListUsers(pb.ListUsersRequest(window=WINDOW), timeout=10)
    assert page.users and all(unset(u) for u in page.users)
    assert unset(stub.GetUser(pb.GetUserRequest(user_id="alice", window=WINDOW), timeout=10))
    breakdown = stub.GetPropertyBreakdown(
        pb.GetPropertyBreakdownRequest(key="plan", window=WINDOW), timeout=10
    )
    assert breakdown.values and all(unset(v) for v in breakdown.values)
    assert unset(stub.GetTotals(pb.GetTotalsRequest(window=WINDOW), timeout=10))


def test_revenue_and_margin_per_user(
    paid_stub: UserMetricsServiceStub, paid_con: duckdb.DuckDBPyConnection
) -> None:
    """With imported revenue, every user's revenue is exact (a period prorated, half-even to the
    nano-dollar), margin is revenue - cost (an unknown cost counts as 0), and a user who paid
    without a request is listed with 0 requests; the messages mirror the query functions."""
    page = paid_stub.ListUsers(pb.ListUsersRequest(window=PAID_WINDOW, sort="user_id"), timeout=10)
    assert_mirrors(page, query_users(paid_con, PAID_SINCE, PAID_UNTIL, sort="user_id"))
    assert [u.user_id for u in page.users] == ["alice", "bob", "carol", "dave"]
    for u in page.users:
        cost = Decimal(u.cost_usd) if u.HasField("cost_usd") else Decimal(0)
        assert_profit(u, REVENUE[u.user_id], cost)
        one = paid_stub.GetUser(pb.GetUserRequest(user_id=u.user_id, window=PAID_WINDOW), timeout=10)
        assert_mirrors(one, query_user(paid_con, u.user_id, PAID_SINCE, PAID_UNTIL))
    by_id = {u.user_id: u for u in page.users}
    assert Decimal(by_id["bob"].margin_usd) < 0 < Decimal(by_id["bob"].cost_usd)
    assert not by_id["carol"].HasField("cost_usd") and by_id["carol"].margin_usd == "5.000000000"
    assert by_id["carol"].margin_ratio == 1.0
    assert by_id["dave"].requests == 0 and by_id["dave"].margin_usd == "2.000000000"


def test_users_sort_by_margin_both_ways(
    paid_stub: UserMetricsServiceStub, paid_con: duckdb.DuckDBPyConnection
) -> None:
    """sort margin_usd lists the least profitable first (bob's loss), -margin_usd the most."""
    least = paid_stub.ListUsers(pb.ListUsersRequest(window=PAID_WINDOW, sort="margin_usd"), timeout=10)
    assert_mirrors(least, query_users(paid_con, PAID_SINCE, PAID_UNTIL, sort="margin_usd"))
    assert [u.user_id for u in least.users] == ["bob", "dave", "carol", "alice"]
    most = paid_stub.ListUsers(
        pb.ListUsersRequest(window=PAID_WINDOW, sort="-margin_usd", limit=2), timeout=10
    )
    assert [u.user_id for u in most.users] == ["alice", "carol"] and most.total == 4


def test_margin_by_property_and_in_totals(
    paid_stub: UserMetricsServiceStub, paid_con: duckdb.DuckDBPyConnection
) -> None:
    """A user's revenue counts in the plan most of their requests carried (none: the null group);
    totals hold the sum of every user's revenue, and margin = revenue - cost there too."""
    breakdown = paid_stub.GetPropertyBreakdown(
        pb.GetPropertyBreakdownRequest(key="plan", window=PAID_WINDOW), timeout=10
    )
    assert_mirrors(breakdown, query_by_property(paid_con, "plan", PAID_SINCE, PAID_UNTIL))
    values = {v.value if v.HasField("value") else None: v for v in breakdown.values}
    for value, revenue in (
        ("pro", REVENUE["alice"]),
        ("free", REVENUE["bob"]),
        (None, REVENUE["carol"] + REVENUE["dave"]),
    ):
        assert_profit(values[value], revenue, Decimal(values[value].cost_usd))
    totals = paid_stub.GetTotals(pb.GetTotalsRequest(window=PAID_WINDOW), timeout=10)
    assert_mirrors(totals, query_totals(paid_con, PAID_SINCE, PAID_UNTIL))
    assert_profit(totals, sum(REVENUE.values(), Decimal(0)), Decimal(totals.cost_usd))
    assert totals.revenue_usd == "30.334333334"


def test_tz_reaches_every_rpc(stub: UserMetricsServiceStub, con: duckdb.DuckDBPyConnection) -> None:
    """A request's tz reads its window in that zone (bare dates are local midnights) in every rpc
    that takes a window, with the answers of the query functions given the same tz."""
    tz, since, until = "Asia/Kolkata", "2026-11-17", "2026-11-19"
    window = pb.Window(since=since, until=until)
    page = stub.ListUsers(pb.ListUsersRequest(window=window, tz=tz), timeout=10)
    assert_mirrors(page, query_users(con, since, until, tz=tz))
    assert page.since.ToDatetime(tzinfo=UTC) == datetime(2026, 11, 16, 18, 30, tzinfo=UTC)
    assert page.until.ToDatetime(tzinfo=UTC) == datetime(2026, 11, 18, 18, 30, tzinfo=UTC)
    got = stub.GetUser(pb.GetUserRequest(user_id="alice", window=window, tz=tz), timeout=10)
    assert_mirrors(got, query_user(con, "alice", since, until, tz=tz))
    series = stub.GetTimeseries(pb.GetTimeseriesRequest(window=window, bucket="day", tz=tz), timeout=10)
    assert_mirrors(series, query_timeseries(con, None, since, until, bucket="day", tz=tz))
    assert series.points[0].start.ToDatetime(tzinfo=UTC) == datetime(2026, 11, 16, 18, 30, tzinfo=UTC)
    breakdown = stub.GetPropertyBreakdown(
        pb.GetPropertyBreakdownRequest(key="plan", window=window, tz=tz), timeout=10
    )
    assert_mirrors(breakdown, query_by_property(con, "plan", since, until, tz=tz))
    totals = stub.GetTotals(pb.GetTotalsRequest(window=window, tz=tz), timeout=10)
    assert_mirrors(totals, query_totals(con, since, until, tz=tz))
    recent = stub.GetRecentRequests(
        pb.GetRecentRequestsRequest(user_id="alice", window=window, tz=tz), timeout=10
    )
    assert_mirrors(recent, query_recent_requests(con, "alice", since, until, limit=20, tz=tz))
    report = stub.GetCoverage(pb.GetCoverageRequest(window=window, tz=tz), timeout=10)
    assert report.since == totals.since and report.scopes
    assert_mirrors(report.scopes[0], query_coverage(con, since, until, tz=tz).scopes[0])
    found = stub.GetAnomalies(pb.GetAnomaliesRequest(window=window, tz=tz), timeout=10)
    assert found.since == totals.since
    assert_mirrors(found, query_anomalies(con, since, until, tz=tz))


def test_period_names_pass_through(stub: UserMetricsServiceStub, con: duckdb.DuckDBPyConnection) -> None:
    """since "2026-11" in America/New_York is the local month: from 04:00Z on the 1st (still EDT)
    to 05:00Z on 1 December (EST); the totals are query_totals' for that period."""
    tz = "America/New_York"
    totals = stub.GetTotals(pb.GetTotalsRequest(window=pb.Window(since="2026-11"), tz=tz), timeout=10)
    assert_mirrors(totals, query_totals(con, "2026-11", tz=tz))
    assert totals.since.ToDatetime(tzinfo=UTC) == datetime(2026, 11, 1, 4, tzinfo=UTC)
    assert totals.until.ToDatetime(tzinfo=UTC) == datetime(2026, 12, 1, 5, tzinfo=UTC)
    assert totals.requests == 10  # every call of CALLS is in November
    error = rpc_error(stub.GetTotals, pb.GetTotalsRequest(window=pb.Window(since="2026-11"), tz="Mars/Base"))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "Mars/Base" in error.details()


def test_a_request_without_tz_is_read_in_the_timezone_setting(tmp_path: Path) -> None:
    """With timezone = Asia/Kolkata, a window without tz is read there; a request's own tz wins."""
    svc = Service(tmp_path / "um.duckdb", timezone="Asia/Kolkata")
    svc.start()
    try:
        with grpc.insecure_channel(svc.target) as channel:
            client = UserMetricsServiceStub(channel)
            window = pb.Window(since="2026-11-18", until="2026-11-19")
            local = client.GetTotals(pb.GetTotalsRequest(window=window), timeout=10)
            utc = client.GetTotals(pb.GetTotalsRequest(window=window, tz="UTC"), timeout=10)
            series = client.GetTimeseries(pb.GetTimeseriesRequest(window=window), timeout=10)
    finally:
        svc.stop()
    assert local.since.ToDatetime(tzinfo=UTC) == datetime(2026, 11, 17, 18, 30, tzinfo=UTC)
    assert utc.since.ToDatetime(tzinfo=UTC) == datetime(2026, 11, 18, tzinfo=UTC)
    assert series.tz == "Asia/Kolkata" and len(series.points) == 1
