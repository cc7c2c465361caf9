"""Model filters and breakdowns, and the bound on dimension values (``dims.py``).

Every answer is checked against a plain GROUP BY over ``requests``, the public contract, on a
service that folds values (``max_dimension_values=4``) and on one that does not.
"""

from __future__ import annotations

import gzip
import random
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pytest
from conftest import Service, cuts
from otlp import request, span
from query_data import DAY0

import user_metrics
from user_metrics.query.properties import by_property as query_by_property
from user_metrics.query.timeseries import timeseries as query_timeseries
from user_metrics.query.totals import totals as query_totals
from user_metrics.query.users import user as query_user
from user_metrics.query.users import users as query_users
from user_metrics.store.schema import SCHEMA_VERSION

LIMIT = 4
FEATURES = [f"f{i:02d}" for i in range(10)]
# provider, request model, response model: an alias answered by its dated snapshot, a request
# model in capitals, a span that names only the model that answered.
MODELS = [
    ("openai", "gpt-4o", "gpt-4o-2024-08-06"),
    ("openai", "GPT-4o-mini", "gpt-4o-mini-2024-07-18"),
    ("anthropic", "claude-sonnet-4-5", "claude-sonnet-4-5-20250929"),
    ("openai", None, "o3-mini-2025-01-31"),
]
# New models on the last day only, beyond the limit of both model dimensions.
LATE_MODELS = [("acme", f"acme-{k}", f"acme-{k}-v1") for k in range(5)]
WINDOWS = {
    "whole days": (DAY0, DAY0 + timedelta(days=4)),
    "ragged both ends": (DAY0 + timedelta(hours=5, minutes=7), DAY0 + timedelta(days=3, hours=13, seconds=1)),
    "inside one day": (DAY0 + timedelta(days=3, hours=2), DAY0 + timedelta(days=3, hours=20)),
}
ALL_TIME = (DAY0 - timedelta(days=1), DAY0 + timedelta(days=5))


@dataclass(frozen=True)
class Call:
    start: datetime
    user: str | None
    provider: str
    request_model: str | None
    response_model: str | None  # None: the call failed before a model answered
    feature: str
    plan: str
    service: str


def calls(count: int = 240) -> list[Call]:
    """Four days of calls in time order; the late models only on the last day."""
    rng = random.Random(13)
    out = []
    for i in range(count):
        start = DAY0 + timedelta(seconds=i * 4 * 86400 // count + rng.randrange(60), microseconds=i)
        late = start >= DAY0 + timedelta(days=3)
        provider, asked, answered = rng.choice(MODELS + LATE_MODELS if late else MODELS)
        out.append(
            Call(
                start=start,
                user=rng.choice(["alice", "bob", "carol", None]),
                provider=provider,
                request_model=asked,
                response_model=None if i % 7 == 3 and asked is not None else answered,
                feature=FEATURES[(i * 7) % len(FEATURES)],
                plan=rng.choice(["free", "pro", "enterprise"]),
                service=("chat-api", "batch")[i % 2],
            )
        )
    return out


CALLS = calls()


def _ns(t: datetime) -> int:
    return int((t - datetime(1970, 1, 1, tzinfo=t.tzinfo)) / timedelta(microseconds=1)) * 1000


def export(svc: Service, chosen: list[Call], per_request: int = 30) -> None:
    """Send the calls in order, one resource (service) per request, as an SDK would."""
    assert svc.app is not None
    for i in range(0, len(chosen), per_request):
        for service in ("chat-api", "batch"):
            spans = []
            for c in chosen[i : i + per_request]:
                if c.service != service:
                    continue
                attrs: dict[str, Any] = {
                    "gen_ai.operation.name": "chat",
                    "gen_ai.provider.name": c.provider,
                    "property.feature": c.feature,
                    "property.plan": c.plan,
                }
                if c.response_model is not None:  # a failed call reports no usage: no cost
                    attrs |= {"gen_ai.usage.input_tokens": 1000, "gen_ai.usage.output_tokens": 100}
                if c.request_model is not None:
                    attrs["gen_ai.request.model"] = c.request_model
                if c.response_model is not None:
                    attrs["gen_ai.response.model"] = c.response_model
                if c.user is not None:
                    attrs["user.id"] = c.user
                spans.append(span(attrs, start=_ns(c.start), error=c.response_model is None))
            if spans:
                result = svc.app.ingestor.export(request(spans, {"service.name": service}))
                assert result.rejected_spans == 0, result.error_message


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Service]]:
    """The same calls in a service that folds values and in one that does not."""
    out = {}
    for name, limit in (("folded", LIMIT), ("unbounded", 1000)):
        out[name] = Service(tmp_path_factory.mktemp(name) / "um.duckdb", max_dimension_values=limit)
        out[name].start()
        export(out[name], CALLS)
    yield out
    for svc in out.values():
        svc.stop()


@pytest.fixture(params=["folded", "unbounded"])
def served(request: pytest.FixtureRequest, services: dict[str, Service]) -> Service:
    return services[request.param]


@pytest.fixture
def folded(services: dict[str, Service]) -> Service:
    return services["folded"]


def reader(svc: Service) -> Any:
    assert svc.app is not None
    return svc.app.store.reader()


@pytest.fixture
def con(served: Service) -> Iterator[duckdb.DuckDBPyConnection]:
    with reader(served) as cursor:
        yield cursor


# ---- plain GROUP BYs over requests -----------------------------------------------------------------

MODEL_MATCH = "(lower(request_model) = lower($model) OR lower(response_model) = lower($model))"


def direct(con: duckdb.DuckDBPyConnection, sql: str, since: datetime, until: datetime, **params: Any) -> Any:
    window = "start_time >= $since AND start_time < $until"
    return con.execute(sql.format(window=window), {"since": since, "until": until, **params}).fetchall()


def direct_users(
    con: duckdb.DuckDBPyConnection, since: datetime, until: datetime, where: str = "TRUE", **params: Any
) -> dict[str | None, tuple[Any, ...]]:
    rows = direct(
        con,
        f"""SELECT user_id, count(*), count(*) FILTER (status = 'error'), coalesce(sum(input_tokens), 0),
                   CASE WHEN count(cost_usd) > 0 THEN sum(cost_usd) END,
                   count(*) FILTER (cost_source = 'unpriced')
            FROM requests WHERE {{window}} AND {where} GROUP BY user_id""",
        since,
        until,
        **params,
    )
    return {r[0]: tuple(r[1:]) for r in rows}


def got_users(page: Any) -> dict[str | None, tuple[Any, ...]]:
    return {
        u.user_id: (u.requests, u.errors, u.input_tokens, u.cost_usd, u.unpriced_requests) for u in page.users
    }


def direct_property(
    con: duckdb.DuckDBPyConnection,
    key: str,
    since: datetime,
    until: datetime,
    where: str = "TRUE",
    **params: Any,
) -> dict[str | None, tuple[Any, ...]]:
    rows = direct(
        con,
        f"""SELECT properties[$key], count(DISTINCT user_id), count(*), coalesce(sum(cost_usd), 0)
            FROM requests WHERE {{window}} AND {where} GROUP BY 1""",
        since,
        until,
        key=key,
        **params,
    )
    return {r[0]: tuple(r[1:]) for r in rows}


def got_property(breakdown: Any) -> dict[str | None, tuple[Any, ...]]:
    return {v.value: (v.users, v.requests, v.cost_usd) for v in breakdown.values}


def check_filtered(
    con: duckdb.DuckDBPyConnection,
    since: datetime,
    until: datetime,
    where: str,
    kwargs: dict[str, Any],
    **params: Any,
) -> int:
    """users, totals and a breakdown by plan under the filter equal the GROUP BYs; returns the requests."""
    want = direct_users(con, since, until, where, **params)
    assert got_users(query_users(con, since, until, limit=1000, **kwargs)) == want
    totals = query_totals(con, since, until, **kwargs)
    assert totals.requests == sum(w[0] for w in want.values())
    assert totals.cost_usd == sum((w[3] for w in want.values() if w[3] is not None), Decimal(0))
    assert got_property(query_by_property(con, "plan", since, until, **kwargs)) == direct_property(
        con, "plan", since, until, where, **params
    )
    series = query_timeseries(con, None, since, until, bucket="hour", **kwargs)
    assert sum(p.requests for p in series.points) == totals.requests
    return totals.requests


def check_models(
    con: duckdb.DuckDBPyConnection, user: str | None, since: datetime, until: datetime
) -> set[str | None]:
    """A user's models equal a GROUP BY of the model asked for, else answered; returns their names."""
    rows = direct(
        con,
        """SELECT provider, coalesce(request_model, response_model), count(*), sum(cost_usd)
           FROM requests WHERE {window} AND user_id IS NOT DISTINCT FROM $user GROUP BY ALL""",
        since,
        until,
        user=user,
    )
    got = query_user(con, user, since, until).models
    assert {(m.provider, m.model): (m.requests, m.cost_usd) for m in got} == {
        (r[0], r[1]): (r[2], r[3]) for r in rows
    }
    return {m.model for m in got}


def admitted(con: duckdb.DuckDBPyConnection, dim: str) -> set[str]:
    rows = con.execute("SELECT value FROM dim_values WHERE dim = $d AND value IS NOT NULL", {"d": dim})
    return {v for (v,) in rows.fetchall()}


# ---- models ---------------------------------------------------------------------------------------


class TestModels:
    @pytest.mark.parametrize(
        "model",
        [
            "gpt-4o",
            "gpt-4o-2024-08-06",
            "gpt-4o-MINI",
            "o3-mini-2025-01-31",
            "acme-3",
            "acme-3-v1",
            "nothing",
        ],
    )
    @pytest.mark.parametrize("window", WINDOWS)
    def test_a_model_filter_matches_the_request_or_the_response_model_ignoring_case(
        self, con: duckdb.DuckDBPyConnection, model: str, window: str
    ) -> None:
        """model= finds requests that asked for it and requests it answered, whatever the case."""
        since, until = WINDOWS[window]
        found = check_filtered(con, since, until, MODEL_MATCH, {"model": model}, model=model)
        if model != "nothing" and window != "inside one day" and not model.startswith("acme"):
            assert found > 0

    def test_an_alias_finds_its_failed_calls_and_the_dated_snapshot_only_the_answered(
        self, con: duckdb.DuckDBPyConnection
    ) -> None:
        """gpt-4o counts the calls that failed before an answer; gpt-4o-2024-08-06 does not."""
        alias = query_totals(con, *ALL_TIME, model="gpt-4o")
        dated = query_totals(con, *ALL_TIME, model="gpt-4o-2024-08-06")
        failed = sum(1 for c in CALLS if c.request_model == "gpt-4o" and c.response_model is None)
        assert failed > 0 and alias.requests == dated.requests + failed
        assert dated.errors == 0 and alias.errors == failed

    @pytest.mark.parametrize("window", WINDOWS)
    def test_a_users_models_count_each_call_under_the_model_asked_for(
        self, con: duckdb.DuckDBPyConnection, window: str
    ) -> None:
        """The per-model breakdown groups by request model, else response model: no alias split."""
        since, until = WINDOWS[window]
        for user in ("alice", "bob", None):
            names = check_models(con, user, since, until)
            assert "gpt-4o-2024-08-06" not in names and "gpt-4o-mini-2024-07-18" not in names

    def test_the_users_page_lists_the_alias_once_with_its_cost(self, con: duckdb.DuckDBPyConnection) -> None:
        """The user page's bug: gpt-4o with cost – (its failed calls) beside gpt-4o-2024-08-06."""
        [alias] = [m for m in query_user(con, "alice", *ALL_TIME).models if m.model == "gpt-4o"]
        assert alias.cost_usd is not None and alias.cost_usd > 0


# ---- the bound on dimension values -------------------------------------------------------------------


class TestFolding:
    def test_each_dimension_keeps_at_most_the_limit_of_values_of_its_own(self, folded: Service) -> None:
        """dims holds at most max_dimension_values real values per dimension, then (other)."""
        with reader(folded) as con:
            features = {
                v for (v,) in con.execute("SELECT DISTINCT properties['feature'] FROM dims").fetchall()
            }
            asked = {v for (v,) in con.execute("SELECT DISTINCT lower(request_model) FROM dims").fetchall()}
            # the first come: every model of the first three days, then the first late one
            assert admitted(con, "request_model") >= {"gpt-4o", "gpt-4o-mini", "claude-sonnet-4-5"}
            assert admitted(con, "provider") == {"openai", "anthropic", "acme"}  # under the limit
            stored = {
                v for (v,) in con.execute("SELECT DISTINCT properties['feature'] FROM requests").fetchall()
            }
        assert len(features - {"(other)"}) == LIMIT and "(other)" in features
        assert len(asked - {"(other)", None}) == LIMIT and "(other)" in asked
        assert stored == set(FEATURES), "requests keep the real values"

    def test_folded_requests_are_counted_on_metrics(self, folded: Service) -> None:
        """user_metrics_limit_cuts_total{limit="max_dimension_values"} counts requests with a folded value."""
        assert folded.app is not None
        with reader(folded) as con:
            features = admitted(con, "property:feature")
            asked, answered = admitted(con, "request_model"), admitted(con, "response_model")
        want = sum(
            1
            for c in CALLS
            if c.feature not in features
            or (c.request_model is not None and c.request_model.lower() not in asked)
            or (c.response_model is not None and c.response_model.lower() not in answered)
        )
        assert 0 < want < len(CALLS)
        assert folded.app.stats.limit_cuts["max_dimension_values"] == want
        assert cuts(folded.app.api_url)["max_dimension_values"] == want

    @pytest.mark.parametrize("window", [*WINDOWS, "all time"])
    def test_a_breakdown_by_a_property_with_folded_values_names_every_value(
        self, con: duckdb.DuckDBPyConnection, window: str
    ) -> None:
        """by_property reads the request rows when the key has folded values: exact, no (other)."""
        since, until = ALL_TIME if window == "all time" else WINDOWS[window]
        got = query_by_property(con, "feature", since, until)
        assert got_property(got) == direct_property(con, "feature", since, until)
        assert got.total_values == len(got.values) and not got.truncated

    @pytest.mark.parametrize("window", WINDOWS)
    def test_a_filter_on_a_folded_value_is_exact(
        self, served: Service, con: duckdb.DuckDBPyConnection, window: str
    ) -> None:
        """A value whose requests sit in (other) cells is still counted exactly (from the rows)."""
        since, until = WINDOWS[window]
        folded = sorted(set(FEATURES) - admitted(con, "property:feature"))
        if served.settings.max_dimension_values == LIMIT:
            assert folded
        for value in folded or FEATURES[-1:]:
            found = check_filtered(
                con, since, until, "properties['feature'] = $v", {"properties": {"feature": value}}, v=value
            )
            assert found > 0 or window == "inside one day"

    @pytest.mark.parametrize("window", WINDOWS)
    def test_a_filter_on_an_admitted_value_of_a_key_with_folded_values_is_exact(
        self, con: duckdb.DuckDBPyConnection, window: str
    ) -> None:
        """An admitted value has complete cells of its own, beside the key's (other) cells."""
        since, until = WINDOWS[window]
        for value in sorted(admitted(con, "property:feature")):
            found = check_filtered(
                con, since, until, "properties['feature'] = $v", {"properties": {"feature": value}}, v=value
            )
            assert found > 0 or window == "inside one day"

    def test_combined_filters_are_exact(self, con: duckdb.DuckDBPyConnection) -> None:
        """A folded model and an admitted property together, over a ragged window."""
        since, until = WINDOWS["ragged both ends"]
        where = f"{MODEL_MATCH} AND properties['plan'] = 'pro'"
        check_filtered(
            con, since, until, where, {"model": "acme-2-v1", "properties": {"plan": "pro"}}, model="acme-2-v1"
        )
        check_filtered(
            con, since, until, where, {"model": "gpt-4o", "properties": {"plan": "pro"}}, model="gpt-4o"
        )


class TestFoldingAcrossRestartsAndAttribution:
    def test_admission_is_for_good_and_a_raised_limit_admits_nothing_new(self, tmp_path: Path) -> None:
        """After a restart the admitted values keep their cells; a dimension that folded admits no
        more, even with a higher limit, so an admitted value's cells always hold all its requests."""
        svc = Service(tmp_path / "um.duckdb", max_dimension_values=2)
        app = svc.start()
        export(svc, [c for c in CALLS if c.feature in ("f00", "f01", "f02")])
        with app.store.reader() as con:
            first = admitted(con, "property:feature")
        assert len(first) == 2
        svc.stop()
        svc.settings = replace(svc.settings, max_dimension_values=100)
        app = svc.start()
        try:
            export(svc, [c for c in CALLS if c.feature in ("f02", "f03")])
            assert app.stats.limit_cuts["max_dimension_values"] >= sum(1 for c in CALLS if c.feature == "f03")
            with app.store.reader() as con:
                assert admitted(con, "property:feature") == first
                for value in ("f00", "f02", "f03"):
                    check_filtered(
                        con,
                        *ALL_TIME,
                        "properties['feature'] = $v",
                        {"properties": {"feature": value}},
                        v=value,
                    )
                assert got_property(query_by_property(con, "feature", *ALL_TIME)) == direct_property(
                    con, "feature", *ALL_TIME
                )
        finally:
            svc.stop()

    def test_rows_finalised_from_pending_are_folded_too(self, tmp_path: Path) -> None:
        """LLM spans that waited for their parent's user reach the rollups bounded like any other."""
        svc = Service(tmp_path / "um.duckdb", max_dimension_values=2, attribution_window_seconds=60.0)
        app = svc.start()
        trace, parent = bytes(range(16)), bytes(range(1, 9))
        children = [
            span(
                {
                    "gen_ai.operation.name": "chat",
                    "gen_ai.provider.name": "openai",
                    "gen_ai.request.model": "gpt-4o",
                    "gen_ai.usage.input_tokens": 10,
                    "gen_ai.usage.output_tokens": 1,
                    "property.feature": f"w{i}",
                },
                trace_id=trace,
                parent=parent,
                start=_ns(DAY0) + i * 10**9,
            )
            for i in range(5)
        ]
        app.ingestor.export(request(children))
        assert app.stats.spans_stored == 0, "the children wait for their parent"
        app.ingestor.export(
            request([span({"user.id": "alice"}, trace_id=trace, span_id=parent, name="GET /")])
        )
        svc.stop()  # the writer finalises the waiting rows before it stops
        assert app.stats.spans_stored == 5 and app.stats.limit_cuts["max_dimension_values"] == 3
        with user_metrics.connect(path=svc.db) as client:
            got = client.by_property("feature", *ALL_TIME)
            assert {v.value: (v.users, v.requests) for v in got.values} == {f"w{i}": (1, 1) for i in range(5)}
            assert client.users(*ALL_TIME, properties={"feature": "w4"}).users[0].user_id == "alice"
        con = duckdb.connect(str(svc.db), read_only=True)
        try:
            features = {v for (v,) in con.execute("SELECT properties['feature'] FROM dims").fetchall()}
        finally:
            con.close()
        assert features == {"w0", "w1", "(other)"}


# ---- upgrade ----------------------------------------------------------------------------------------


def test_a_database_of_schema_6_is_upgraded_and_its_models_no_longer_split(tmp_path: Path) -> None:
    """A file written by the code of schema 6 (tests/data/make_schema6_db.py) gets its rollups rebuilt:
    the alias and its dated snapshot are one model, and model filters see both names."""
    db = tmp_path / "old.duckdb"
    with (
        gzip.open(Path(__file__).parents[1] / "data" / "schema6.duckdb.gz", "rb") as src,
        db.open("wb") as dst,
    ):
        shutil.copyfileobj(src, dst)
    con = duckdb.connect(str(db), read_only=True)
    try:
        assert con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == ("6",)
        old_models = {m for (m,) in con.execute("SELECT DISTINCT model FROM dims").fetchall()}
        assert {"gpt-4o", "gpt-4o-2024-08-06"} <= old_models, "the split the upgrade must mend"
    finally:
        con.close()
    svc = Service(db)
    svc.start()
    svc.stop()
    con = duckdb.connect(str(db), read_only=True)
    try:
        assert con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (
            SCHEMA_VERSION,
        )
        since, until = datetime(2026, 11, 1, tzinfo=DAY0.tzinfo), datetime(2026, 12, 1, tzinfo=DAY0.tzinfo)
        for user in ("alice", "bob", "carol", None):
            check_models(con, user, since, until)
        assert "gpt-4o-2024-08-06" not in check_models(con, "alice", since, until)
        for model in ("gpt-4o", "GPT-4o-2024-08-06", "claude-sonnet-4-5-20250929"):
            check_filtered(con, since, until, MODEL_MATCH, {"model": model}, model=model)
        assert got_property(query_by_property(con, "feature", since, until)) == direct_property(
            con, "feature", since, until
        )
    finally:
        con.close()
