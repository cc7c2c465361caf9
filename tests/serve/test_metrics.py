"""/metrics: exposition checked by promtool, values against the query layer, the cap, escaping."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from conftest import Service, spawn
from otlp import T0, chat, request, span
from prometheus_client.parser import text_string_to_metric_families
from query_data import build, requests_for

from user_metrics.query.users import user as query_user
from user_metrics.serve.metrics import Gathered, RenderedMetrics

TRUTHS = build(seed=3, count=150)
ODD_IDS = ['quote"d', "back\\slash", "new\nline", "zoë 🙂", "trailing\\"]
PROMTOOL = shutil.which("promtool")
PROMETHEUS = shutil.which("prometheus")
CONFIG = Path(__file__).resolve().parents[2] / "collector-config"
# .ci/run installs Debian's prometheus package and sets this, so CI cannot skip these tests.
REQUIRED = os.environ.get("USER_METRICS_REQUIRE_PROMETHEUS") == "1"
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None and not REQUIRED, reason="promtool is not installed (.ci/run installs it)"
)
needs_prometheus = pytest.mark.skipif(
    PROMETHEUS is None and not REQUIRED, reason="prometheus is not installed (.ci/run installs it)"
)


def scrape(svc: Service, accept: str | None = None) -> tuple[str, str]:
    assert svc.app is not None
    req = urllib.request.Request(svc.app.api_url + "/metrics", headers={"Accept": accept} if accept else {})
    with urllib.request.urlopen(req, timeout=30) as response:
        return response.headers["Content-Type"], response.read().decode()


def samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Sample values of one family, keyed by their sorted labels."""
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                out[tuple(sorted(sample.labels.items()))] = sample.value
    return out


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    svc = Service(tmp_path_factory.mktemp("prom") / "um.duckdb", metrics_properties=("plan",))
    app = svc.start()
    for req in requests_for(TRUTHS):
        app.ingestor.export(req)
    app.ingestor.export(request([span(chat(user), start=T0 + i) for i, user in enumerate(ODD_IDS)]))
    yield svc
    svc.stop()


def promtool_check(text: str) -> tuple[int, str, str]:
    """`promtool check metrics` of an exposition: (exit code, stdout, stderr)."""
    assert PROMTOOL is not None
    done = subprocess.run(
        [PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    return done.returncode, done.stdout, done.stderr


@needs_promtool
def test_promtool_finds_nothing_to_complain_about(served: Service) -> None:
    """`promtool check metrics` on a real scrape prints nothing and exits 0."""
    _, text = scrape(served)
    assert promtool_check(text) == (0, "", "")


def test_openmetrics_when_the_scraper_asks(served: Service) -> None:
    """Accept: application/openmetrics-text gets OpenMetrics, ending in # EOF."""
    content_type, text = scrape(served, "application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text") and text.endswith("# EOF\n")
    content_type, text = scrape(served)
    assert content_type.startswith("text/plain") and "# EOF" not in text


def test_per_user_counters_equal_the_query_layer_all_time(served: Service) -> None:
    """Requests, errors, tokens and cost per user are the store's exact all-time totals."""
    _, text = scrape(served)
    requests = samples(text, "llm_user_requests_total")
    tokens = samples(text, "llm_user_tokens_total")
    cost = samples(text, "llm_user_cost_usd_total")
    assert served.app is not None
    with served.app.store.reader() as con:
        for user in {t.user for t in TRUTHS if t.user is not None} | set(ODD_IDS):
            want = query_user(con, user, "1970-01-01", "2100-01-01")
            assert requests[(("status", "ok"), ("user_id", user))] == want.requests - want.errors
            assert requests[(("status", "error"), ("user_id", user))] == want.errors
            assert tokens[(("type", "input"), ("user_id", user))] == want.input_tokens
            assert tokens[(("type", "output"), ("user_id", user))] == want.output_tokens
            assert cost[(("user_id", user),)] == pytest.approx(float(want.cost_usd or 0), rel=1e-12)


def test_label_values_are_escaped_whatever_the_id(served: Service) -> None:
    """Quotes, backslashes, newlines and unicode in ids come back exactly from the parsed scrape."""
    _, text = scrape(served)
    ids = {dict(k)["user_id"] for k in samples(text, "llm_user_cost_usd_total")}
    assert set(ODD_IDS) <= ids


def test_global_and_property_families(served: Service) -> None:
    """Per provider/model and per plan totals, and the duration histogram, match the spans."""
    _, text = scrape(served)
    requests = samples(text, "llm_requests_total")
    total = sum(requests.values())
    assert total == len(TRUTHS) + len(ODD_IDS)
    unpriced = samples(text, "llm_unpriced_requests_total")
    assert sum(unpriced.values()) == sum(t.cost is None for t in TRUTHS)
    plan_cost = samples(text, "llm_property_cost_usd_total")
    for plan in ("free", "pro", "enterprise"):
        want = sum((t.cost for t in TRUTHS if t.plan == plan and t.cost is not None), Decimal(0))
        assert plan_cost[(("property", "plan"), ("value", plan))] == pytest.approx(float(want), rel=1e-12)
    infinite = samples(text, "llm_request_duration_seconds_bucket")
    counts = samples(text, "llm_request_duration_seconds_count")
    assert sum(v for k, v in infinite.items() if dict(k)["le"] == "+Inf") == sum(counts.values()) == total
    under_100ms = sum(v for k, v in infinite.items() if dict(k)["le"] == "0.1")
    assert under_100ms == sum(t.duration_ms <= 100 for t in TRUTHS)


def test_counters_survive_a_restart_unchanged(served: Service) -> None:
    """A restart recomputes every usage counter from the store: the same values, none lower."""
    families = (
        "llm_user_requests_total",
        "llm_user_cost_usd_total",
        "llm_requests_total",
        "llm_tokens_total",
    )
    before = {f: samples(scrape(served)[1], f) for f in families}
    served.restart()
    after = {f: samples(scrape(served)[1], f) for f in families}
    assert after == before


class TestCap:
    def _service(self, tmp_path: Path, max_users: int) -> Service:
        svc = Service(tmp_path / "um.duckdb", metrics_max_users=max_users)
        app = svc.start()
        # user-00 is the oldest, user-29 the most recent
        app.ingestor.export(request([span(chat(f"user-{i:02}"), start=T0 + i * 10**9) for i in range(30)]))
        return svc

    def test_only_the_most_recently_active_users_are_exposed(self, tmp_path: Path) -> None:
        """With 30 users and max_users=10: users 20..29, and the gauge says 20 were left out."""
        svc = self._service(tmp_path, 10)
        try:
            _, text = scrape(svc)
        finally:
            svc.stop()
        ids = {dict(k)["user_id"] for k in samples(text, "llm_user_cost_usd_total")}
        assert ids == {f"user-{i:02}" for i in range(20, 30)}
        assert len(samples(text, "llm_user_requests_total")) == 20  # ok and error per user
        assert samples(text, "user_metrics_users_left_out") == {(): 20.0}

    def test_zero_turns_per_user_families_off(self, tmp_path: Path) -> None:
        """max_users=0 exposes no per-user series; global families still count everything."""
        svc = self._service(tmp_path, 0)
        try:
            _, text = scrape(svc)
        finally:
            svc.stop()
        assert samples(text, "llm_user_requests_total") == {}
        assert samples(text, "user_metrics_users_left_out") == {(): 30.0}
        assert sum(samples(text, "llm_requests_total").values()) == 30


@needs_promtool
@pytest.mark.parametrize(
    "args",
    [
        ["check", "config", "prometheus.yml"],
        ["check", "rules", "alerts.yml"],
        ["test", "rules", "alerts_test.yml"],
    ],
)
def test_the_shipped_prometheus_config_and_alert_rules(args: list[str]) -> None:
    """collector-config/prometheus.yml and alerts.yml are valid, and the alert rules pass their unit tests."""
    assert PROMTOOL is not None, "promtool is required here"
    done = subprocess.run([PROMTOOL, *args], cwd=CONFIG, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _prometheus_query(base: str, expr: str) -> list[dict[str, object]]:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as response:
        answer = json.loads(response.read())
    assert answer["status"] == "success", answer
    return list(answer["data"]["result"])


@contextlib.contextmanager
def prometheus(tmp_path: Path, scrape_configs: str) -> Iterator[str]:
    """A real Prometheus scraping every second with these scrape configs; yields its base URL."""
    assert PROMETHEUS is not None, "prometheus is required here"
    config = tmp_path / "prometheus.yml"
    config.write_text(f"global:\n  scrape_interval: 1s\nscrape_configs:\n{scrape_configs}")
    port = _free_port()
    proc = spawn(
        [
            PROMETHEUS,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _wait_for(
    base: str, expr: str, ready: Callable[[list[dict[str, object]]], bool]
) -> list[dict[str, object]]:
    deadline = time.monotonic() + 60
    result: list[dict[str, object]] = []
    while time.monotonic() < deadline:
        try:
            result = _prometheus_query(base, expr)
        except OSError:
            result = []
        if ready(result):
            return result
        time.sleep(0.5)
    raise AssertionError(f"Prometheus never answered {expr} as expected: {result}")


@contextlib.contextmanager
def prometheus_scraping(svc: Service, tmp_path: Path, job: str) -> Iterator[str]:
    """A real Prometheus scraping the service every second as ``job``; yields its base URL."""
    assert svc.app is not None
    target = svc.app.api_url.removeprefix("http://")
    with prometheus(
        tmp_path, f"  - job_name: {job}\n    static_configs:\n      - targets: ['{target}']\n"
    ) as base:
        yield base


@needs_prometheus
def test_a_real_prometheus_scrapes_per_user_values(served: Service, tmp_path: Path) -> None:
    """Prometheus, scraping every second, holds the per-user values the test sent."""
    with prometheus_scraping(served, tmp_path, "um") as base:
        _wait_for(base, 'llm_user_requests_total{job="um"}', bool)
        got: dict[str, float] = {}
        for series in _prometheus_query(base, 'sum by (user_id) (llm_user_requests_total{job="um"})'):
            metric, value = series["metric"], series["value"]
            assert isinstance(metric, dict) and isinstance(value, list)
            got[str(metric["user_id"])] = float(value[1])
    want: dict[str, int] = {}
    for t in TRUTHS:
        if t.user is not None:
            want[t.user] = want.get(t.user, 0) + 1
    for odd in ODD_IDS:
        want[odd] = want.get(odd, 0) + 1
    assert got == want


@needs_prometheus
def test_a_real_prometheus_scrapes_with_a_read_token(tmp_path: Path) -> None:
    """The scrape job's credentials_file gets in; the same job without it is refused (up == 0)."""
    token = "scrape-token-0123456789abcdef"
    svc = Service(tmp_path / "um.duckdb", read_tokens=(token,))
    app = svc.start()
    try:
        app.ingestor.export(request([span(chat("scraped"))]))
        (tmp_path / "token").write_text(token)
        target = app.api_url.removeprefix("http://")
        jobs = (
            f"  - job_name: with_token\n    authorization:\n      credentials_file: {tmp_path / 'token'}\n"
            f"    static_configs:\n      - targets: ['{target}']\n"
            f"  - job_name: without\n    static_configs:\n      - targets: ['{target}']\n"
        )
        with prometheus(tmp_path, jobs) as base:
            up = _wait_for(base, "up", lambda result: len(result) == 2)
            by_job = {series["metric"]["job"]: float(series["value"][1]) for series in up}  # type: ignore[index]
            assert by_job == {"with_token": 1.0, "without": 0.0}
            [series] = _wait_for(base, 'sum by (user_id) (llm_user_requests_total{job="with_token"})', bool)
            assert series["metric"] == {"user_id": "scraped"} and series["value"][1] == "1"  # type: ignore[index]
    finally:
        svc.stop()


class TestRendering:
    def _total(self, svc: Service) -> float:
        return sum(samples(scrape(svc)[1], "llm_requests_total").values())

    def test_a_background_rendering_catches_up_with_new_data(self, tmp_path: Path) -> None:
        """With a refresh interval, a scrape answers the last rendering, which follows new exports."""
        svc = Service(tmp_path / "um.duckdb", metrics_refresh_seconds=0.2)
        app = svc.start()
        try:
            app.ingestor.export(request([span(chat("a")) for _ in range(3)]))
            assert self._total(svc) == 3
            app.ingestor.export(request([span(chat("b")) for _ in range(4)]))
            deadline, seen = time.monotonic() + 10, [3.0]
            while seen[-1] != 7 and time.monotonic() < deadline:
                seen.append(self._total(svc))
                time.sleep(0.05)
            assert seen[-1] == 7 and seen == sorted(seen)
        finally:
            svc.stop()

    def test_zero_renders_on_every_scrape(self, tmp_path: Path) -> None:
        """metrics_refresh_seconds=0: each scrape reflects everything committed before it."""
        svc = Service(tmp_path / "um.duckdb", metrics_refresh_seconds=0)
        app = svc.start()
        try:
            for n in range(1, 4):
                app.ingestor.export(request([span(chat("a"))]))
                assert self._total(svc) == n
        finally:
            svc.stop()


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class _Collector:
    """Gathers nothing, taking ``seconds`` of the fake clock each time."""

    def __init__(self, clock: _Clock, seconds: float) -> None:
        self.clock, self.seconds, self.gathers = clock, seconds, 0

    def gather(self) -> Gathered:
        self.clock.now += self.seconds
        self.gathers += 1
        return Gathered((), ())


class _Stop:
    """Stands in for the renderer's stop event: records each wait, stops after ``rounds``."""

    def __init__(self, rounds: int) -> None:
        self.rounds, self.waits = rounds, list[float]()

    def wait(self, timeout: float) -> bool:
        self.waits.append(timeout)
        return len(self.waits) > self.rounds


class TestSpacing:
    def _run(self, seconds: float, versions: Callable[[], object]) -> tuple[list[float], int]:
        """The background renderer's waits with renderings of ``seconds`` each (5 s refresh)."""
        clock = _Clock()
        collector = _Collector(clock, seconds)
        rendered = RenderedMetrics(collector, versions, 5.0, clock=clock)  # type: ignore[arg-type]
        rendered.render("")  # a scrape asks for the text format: rendered now, then in the background
        stop = _Stop(4)
        rendered._stop = stop  # type: ignore[assignment]
        rendered._run()
        return stop.waits, collector.gathers

    def test_a_slow_rendering_waits_nine_times_its_length_before_the_next(self) -> None:
        """Renderings of 2 s with new data all the time: 18 s apart, not 5 (a tenth of the time)."""
        versions = itertools.count()
        assert self._run(2.0, lambda: next(versions)) == ([5.0, 18.0, 18.0, 18.0, 18.0], 5)

    def test_a_quick_rendering_keeps_the_refresh_interval(self) -> None:
        versions = itertools.count()
        assert self._run(0.1, lambda: next(versions)) == ([5.0] * 5, 5)

    def test_no_new_data_no_rendering(self) -> None:
        """The same version: one rendering in the background, then none; the refresh interval again."""
        assert self._run(2.0, lambda: "same") == ([5.0, 18.0, 5.0, 5.0, 5.0], 2)


class TestValueBound:
    FAMILIES = (
        "llm_requests_total",
        "llm_tokens_total",
        "llm_cost_usd_total",
        "llm_unpriced_requests_total",
        "llm_request_duration_seconds_bucket",
        "llm_request_duration_seconds_count",
        "llm_property_requests_total",
        "llm_property_cost_usd_total",
    )

    def test_models_and_values_beyond_the_bound_share_one_other_series_and_none_goes_backwards(
        self, tmp_path: Path
    ) -> None:
        """metrics_max_values=3: the first three models and plans keep their series, later ones are
        summed into (other); with every new model, no series drops or decreases, restarts included."""
        svc = Service(
            tmp_path / "um.duckdb",
            metrics_max_values=3,
            metrics_properties=("plan",),
            metrics_refresh_seconds=0,
        )
        app = svc.start()
        seen: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}

        def check(text: str) -> None:
            for family in self.FAMILIES:
                now = samples(text, family)
                for labels, value in seen.get(family, {}).items():
                    assert now[labels] >= value, (family, labels)
                seen[family] = now

        try:
            for k in range(8):
                spans = [
                    span(chat("u1", model=f"model-{k}", **{"property.plan": f"plan-{k}"}), start=T0 + k)
                    for _ in range(k + 1)
                ]
                app.ingestor.export(request(spans))
                _, text = scrape(svc)
                check(text)
                first = {f"model-{i}" for i in range(min(k + 1, 3))}
                models = {dict(labels)["model"] for labels in samples(text, "llm_requests_total")}
                assert models == first | ({"(other)"} if k >= 3 else set())
                plans = {dict(labels)["value"] for labels in samples(text, "llm_property_requests_total")}
                assert plans == {m.replace("model", "plan") for m in first} | (
                    {"(other)"} if k >= 3 else set()
                )
                left_out = samples(text, "user_metrics_values_left_out")
                assert left_out[(("family", "llm_requests_total"), ("property", ""))] == max(0, k - 2)
                assert left_out[(("family", "llm_property_cost_usd_total"), ("property", "plan"))] == max(
                    0, k - 2
                )
            requests = samples(text, "llm_requests_total")
            other = sum(v for labels, v in requests.items() if dict(labels)["model"] == "(other)")
            assert other == sum(range(4, 9)) and sum(requests.values()) == sum(range(1, 9))
            svc.restart()
            _, after = scrape(svc)
            check(after)
            assert samples(after, "llm_requests_total") == requests
        finally:
            svc.stop()


def test_a_node_without_the_store_families_renders_its_own_and_the_lakes() -> None:
    """lake_store_metrics off: no llm_* family and no store read at all; the node's own counters
    and the lake's shipping figures, as a receiver in lake mode renders them."""
    from prometheus_client.exposition import generate_latest

    from user_metrics.serve.lake_metrics import LakeFigures, lake_families
    from user_metrics.serve.metrics import UsageCollector
    from user_metrics.stats import Stats

    def no_store() -> object:
        raise AssertionError("the store was read")

    figures = LakeFigures(shipped_rows=7, duplicate_rows=2, commits=3, outbox_rows=4, lag_seconds=1.5)
    collector = UsageCollector(
        no_store,
        Stats(spans_stored=9),
        lambda: (0, 0),
        max_users=10,
        property_keys=(),
        store_families=False,
        more=lambda: lake_families(figures),
    )
    text = collector.gather().encode(generate_latest).decode()
    found = {f.name: f for f in text_string_to_metric_families(text)}
    assert not [name for name in found if name.startswith("llm_")]
    assert "user_metrics_users_left_out" not in found and "user_metrics_coverage_share" not in found
    assert found["user_metrics_spans_stored"].samples[0].value == 9
    got = {name: found[name].samples[0].value for name in found if name.startswith("user_metrics_lake_")}
    assert got == {
        "user_metrics_lake_shipped_rows": 7,
        "user_metrics_lake_duplicate_rows": 2,
        "user_metrics_lake_commits": 3,
        "user_metrics_lake_conflicts": 0,
        "user_metrics_lake_ship_failures": 0,
        "user_metrics_lake_outbox_rows": 4,
        "user_metrics_lake_lag_seconds": 1.5,
    }
