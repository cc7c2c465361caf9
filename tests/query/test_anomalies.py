"""Anomaly detection: a week of quiet, noisy history with planted anomalies; exactly those are found."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from conftest import Service
from otlp import chat, request, span

from user_metrics.errors import InvalidInput
from user_metrics.query.anomalies import anomalies

WINDOW_START = datetime(2026, 11, 17, 3, 0, tzinfo=UTC)  # 3 a.m. UTC
WINDOW_END = WINDOW_START + timedelta(hours=1)
HOUR_NS = 3600 * 10**9
NOISE_USERS = 30


def ns(moment: datetime) -> int:
    return int(moment.timestamp()) * 10**9


def calls(
    user: str,
    start_ns: int,
    n: int,
    rng: random.Random,
    *,
    tokens: float = 1.0,
    errors: float = 0.03,
    every_ns: int | None = None,
) -> list[Any]:
    """n chat spans within the hour from start_ns (evenly spaced when every_ns is given)."""
    out = []
    for i in range(n):
        at = start_ns + (i * every_ns if every_ns else rng.randrange(HOUR_NS - 10**9))
        inp, outp = int(rng.randint(200, 800) * tokens), int(rng.randint(50, 200) * tokens)
        out.append(span(chat(user=user, inp=inp, out=outp), start=at, error=rng.random() < errors))
    return out


def history(user: str, rng: random.Random, hours_of_day: list[int], rate: tuple[int, int]) -> list[Any]:
    """A week of ordinary use before the window, in the given hours of each day."""
    spans = []
    for day in range(7, 0, -1):
        for hour in hours_of_day:
            start = WINDOW_START.replace(hour=hour) - timedelta(days=day)
            if start >= WINDOW_START or rng.random() > 0.75:
                continue
            spans += calls(user, ns(start), rng.randint(*rate), rng)
    return spans


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    rng = random.Random(6)
    spans: list[Any] = []
    window = ns(WINDOW_START)
    for i in range(NOISE_USERS):
        hours = sorted(rng.sample(range(24), 10))
        if i < 8:
            hours = sorted({*hours, 3})  # night owls: active at 3 a.m. too, as usual
        spans += history(f"noise-{i:02d}", rng, hours, (3, 12))
        if 3 in hours:
            spans += calls(f"noise-{i:02d}", window, rng.randint(3, 12), rng)
    # 1. Cost and tokens per request jump 20x.
    spans += history("big-spender", rng, list(range(0, 24, 2)), (4, 10))
    spans += calls("big-spender", window, 12, rng, tokens=20)
    # 2. A script at 3 a.m.: a constant request every 15 s, from a user of office hours.
    spans += history("script-3am", rng, list(range(9, 18)), (3, 9))
    spans += calls("script-3am", window, 240, rng, every_ns=15 * 10**9)
    # 3. The error rate goes to 90 %.
    spans += history("flaky", rng, list(range(0, 24, 3)), (10, 20))
    spans += calls("flaky", window, 20, rng, errors=0.9)
    # 4. Brand new, outsized.
    spans += calls("newcomer", window, 400, rng)
    # Brand new, ordinary: not an anomaly.
    spans += calls("fresh", window, 5, rng)
    # No user id at all: never a finding.
    spans += calls(None, window, 500, rng)  # type: ignore[arg-type]

    svc = Service(tmp_path_factory.mktemp("anomalies") / "um.duckdb")
    app = svc.start()
    for i in range(0, len(spans), 2000):
        app.ingestor.export(request(spans[i : i + 2000]))
    yield svc
    svc.stop()


def run(svc: Service, *args: Any, **kw: Any) -> Any:
    """anomalies() on a reader cursor of the running service."""
    assert svc.app is not None
    con = svc.app.store.reader()
    try:
        return anomalies(con, *args, **kw)
    finally:
        con.close()


def found(svc: Service, **kw: Any) -> dict[str, set[tuple[str, str]]]:
    result = run(svc, WINDOW_START, WINDOW_END, **kw)
    by_user: dict[str, set[tuple[str, str]]] = {}
    for f in result.findings:
        by_user.setdefault(f.user_id, set()).add((f.metric, f.method))
    return by_user


def test_exactly_the_planted_anomalies_are_found(planted: Service) -> None:
    by_user = found(planted)
    assert set(by_user) == {"big-spender", "script-3am", "flaky", "newcomer"}
    assert ("cost_usd", "own_history") in by_user["big-spender"]
    assert ("tokens_per_request", "own_history") in by_user["big-spender"]
    assert ("requests", "own_history") in by_user["script-3am"]
    assert by_user["flaky"] == {("error_rate", "own_history")}
    assert ("requests", "population") in by_user["newcomer"]


def test_each_finding_says_what_it_saw_and_against_what(planted: Service) -> None:
    result = run(planted, WINDOW_START, WINDOW_END)
    assert (result.since, result.until, result.bucket_hours) == (WINDOW_START, WINDOW_END, 1)
    assert result.history_since == WINDOW_START - timedelta(days=7)
    script = next(f for f in result.findings if f.user_id == "script-3am" and f.metric == "requests")
    assert script.observed == 240 and 3 <= script.baseline <= 9 and script.score >= 6
    assert script.history_buckets >= 20
    flaky = next(f for f in result.findings if f.user_id == "flaky")
    assert flaky.observed >= 0.7 and flaky.baseline <= 0.1
    spender = next(f for f in result.findings if f.user_id == "big-spender" and f.metric == "cost_usd")
    assert spender.observed / spender.baseline >= 10
    newcomer = next(f for f in result.findings if f.user_id == "newcomer" and f.metric == "requests")
    assert newcomer.observed == 400 and newcomer.baseline <= 20 and newcomer.history_buckets == 0
    assert [f.score for f in result.findings] == sorted((f.score for f in result.findings), reverse=True)


def test_a_quiet_hour_has_no_findings(planted: Service) -> None:
    """The hour before the planted one: only the ordinary users, nothing flagged."""
    result = run(planted, WINDOW_START - timedelta(hours=1), WINDOW_START)
    assert result.findings == ()


def test_a_higher_threshold_keeps_only_the_strongest(planted: Service) -> None:
    by_user = found(planted, threshold=50)
    assert "script-3am" in by_user and "flaky" not in by_user


def test_bad_arguments(planted: Service) -> None:
    with pytest.raises(InvalidInput, match="history"):
        run(planted, WINDOW_START, WINDOW_END, history="yesterday-ish")
    with pytest.raises(InvalidInput, match="threshold"):
        run(planted, WINDOW_START, WINDOW_END, threshold=0)
    with pytest.raises(InvalidInput, match="since"):
        run(planted, WINDOW_END, WINDOW_START)


def test_defaults_are_the_last_hour_against_a_week(planted: Service) -> None:
    result = run(planted, now=lambda: WINDOW_END)
    assert (result.since, result.until) == (WINDOW_START, WINDOW_END)
    assert {f.user_id for f in result.findings} == {"big-spender", "script-3am", "flaky", "newcomer"}


def test_every_reader_gives_the_same_findings(planted: Service) -> None:
    """Python, the HTTP API (through connect(url=)) and the CLI answer alike."""
    import json
    import urllib.error
    import urllib.request

    from servers import cli

    from user_metrics import connect
    from user_metrics.query.results import to_json

    local = run(planted, WINDOW_START, WINDOW_END)
    with connect(url=planted.app.api_url) as client:
        assert client.anomalies(WINDOW_START, WINDOW_END) == local
    args = (
        "anomalies",
        "--url",
        planted.app.api_url,
        "--since",
        "2026-11-17T03:00:00Z",
        "--until",
        "2026-11-17T04:00:00Z",
    )
    done = cli(*args, "--format", "json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == to_json(local)
    table = cli(*args)
    assert "script-3am" in table.stdout and f"{len(local.findings)} findings" in table.stdout
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{planted.app.api_url}/api/v1/anomalies?threshold=lots", timeout=30)
    assert refused.value.code == 400 and "threshold" in json.loads(refused.value.read())["error"]


def test_the_grpc_query_service_answers_the_same(planted: Service) -> None:
    import grpc

    from user_metrics.serve.grpc_api import to_message
    from user_metrics.v1 import user_metrics_pb2 as pb
    from user_metrics.v1 import user_metrics_pb2_grpc as pb_grpc

    local = run(planted, WINDOW_START, WINDOW_END)
    window = pb.Window(since="2026-11-17T03:00:00Z", until="2026-11-17T04:00:00Z")
    with grpc.insecure_channel(planted.target) as channel:
        stub = pb_grpc.UserMetricsServiceStub(channel)
        answer = stub.GetAnomalies(pb.GetAnomaliesRequest(window=window), timeout=30)
        assert answer == to_message(local, pb.Anomalies())
        assert len(answer.findings) >= 4
        with pytest.raises(grpc.RpcError) as refused:
            stub.GetAnomalies(pb.GetAnomaliesRequest(window=window, history="soon"), timeout=30)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_flagged_users_are_a_gauge_on_metrics(planted: Service) -> None:
    """llm_user_anomaly_score{user_id, metric, method}: the findings of the last hour, within the cap."""
    from prometheus_client import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from user_metrics.serve.metrics import UsageCollector, registry
    from user_metrics.stats import Stats

    assert planted.app is not None

    def scrape(max_users: int) -> dict[tuple[str, str, str], float]:
        collector = UsageCollector(
            planted.app.store.reader,  # type: ignore[union-attr]
            Stats(),
            lambda: (0, 0),
            max_users=max_users,
            property_keys=(),
            now=lambda: WINDOW_END,
        )
        text = generate_latest(registry(collector)).decode()
        return {
            (s.labels["user_id"], s.labels["metric"], s.labels["method"]): s.value
            for family in text_string_to_metric_families(text)
            if family.name == "llm_user_anomaly_score"
            for s in family.samples
        }

    gauge = scrape(1000)
    assert {user for user, _, _ in gauge} == {"big-spender", "script-3am", "flaky", "newcomer"}
    assert gauge[("flaky", "error_rate", "own_history")] >= 6
    top = scrape(2)
    assert len(top) == 2 and set(top.values()) == set(sorted(gauge.values(), reverse=True)[:2])
