"""The dashboard in a real browser: Debian's chromium, headless, driven by Playwright.

A real service holds known spans, sent through the OTel SDK's gRPC exporter at times relative to
now (so the 24 h / 7 d / 30 d windows cut them at known places). Every figure the tests read off
the page is checked against that truth, not against the API. Screenshots of every page, desktop
and phone-sized, go to ``test-artifacts/dashboard/`` (or ``$USER_METRICS_ARTIFACTS``).
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlencode, urlsplit
from zoneinfo import ZoneInfo

import pytest
from conftest import Service
from coverage_spans import COMPLETE, PARTIAL, two_scopes
from otlp import chat, request, span
from profit import Record, add_revenue

CHROMIUM = "/usr/bin/chromium"
if not Path(CHROMIUM).exists():
    if os.environ.get("USER_METRICS_REQUIRE_CHROMIUM"):
        raise RuntimeError(f"{CHROMIUM} is missing; .ci/run installs Debian's chromium package")
    pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)", allow_module_level=True)

from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter  # noqa: E402
from opentelemetry.sdk.resources import Resource  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.trace import SpanKind, Status, StatusCode  # noqa: E402
from playwright.sync_api import Browser, Page, sync_playwright  # noqa: E402

from user_metrics.query.anomalies import anomalies  # noqa: E402
from user_metrics.query.totals import totals as query_totals  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("USER_METRICS_ARTIFACTS", ROOT / "test-artifacts")) / "dashboard"
READ_TOKEN = "dashboard-read-token-0123456789"
NOW = datetime.now(UTC)
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1300, "height": 1000}


@dataclass(frozen=True)
class Call:
    user: str | None
    plan: str | None
    ago: timedelta
    model: str = "gpt-4o-mini"
    tokens: tuple[int, int] = (1000, 200)
    cost: str = "0.001000000"
    error: bool = False

    @property
    def start(self) -> datetime:
        return NOW - self.ago


H, D = timedelta(hours=1), timedelta(days=1)
CALLS: list[Call] = [
    *[
        Call("ada", "enterprise", H + i * timedelta(minutes=5), "gpt-4o", (4000, 800), "0.250000000")
        for i in range(3)
    ],
    *[Call("ada", "enterprise", 3 * D + i * H, "gpt-4o", (2000, 400), "0.100000000") for i in range(5)],
    *[Call("bob", "free", 2 * D + i * H, error=i < 2) for i in range(10)],
    *[Call("cy", "pro", 20 * D + i * H, "gpt-4o", (500, 100), "0.020000000") for i in range(4)],
    Call("cy", "pro", 5 * H, "gpt-4o", (500, 100), "0.020000000"),
    Call("dee", "free", 10 * D, tokens=(99, 1), cost="0.500000000"),
    *[
        Call(f"user-{n:02}", "free", 6 * D + n * timedelta(minutes=7), tokens=(10 * n, n))
        for n in range(1, 31)
    ],
    # A new user scripting a request a minute: the anomalies panel should flag ace.
    *[Call("ace", "pro", timedelta(minutes=2 + i)) for i in range(30)],
    Call(None, None, 4 * D),
    Call(None, None, 30 * H),
]


def expected(
    window: timedelta, plan: str | None = None, model: str | None = None
) -> dict[str | None, dict[str, Any]]:
    """Per user (None: no user id): requests, cost, tokens, errors in the last ``window``."""
    out: dict[str | None, dict[str, Any]] = {}
    for c in CALLS:
        if (
            c.ago >= window
            or (plan is not None and c.plan != plan)
            or (model is not None and c.model != model)
        ):
            continue
        u = out.setdefault(c.user, {"requests": 0, "cost": Decimal(0), "tokens": 0, "errors": 0})
        u["requests"] += 1
        u["cost"] += Decimal(c.cost)
        u["tokens"] += sum(c.tokens)
        u["errors"] += c.error
    return out


def send(target: str) -> None:
    """CALLS through the OTel SDK's gRPC exporter, as an instrumented application sends them."""
    provider = TracerProvider(
        resource=Resource.create({"service.name": "dashboard-test", "deployment.environment.name": "test"})
    )
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=target, insecure=True)))
    tracer = provider.get_tracer("test_dashboard")
    for c in CALLS:
        start = int(c.start.timestamp() * 1e9)
        attrs: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": c.model,
            "gen_ai.response.model": c.model,
            "gen_ai.usage.input_tokens": c.tokens[0],
            "gen_ai.usage.output_tokens": c.tokens[1],
            "gen_ai.usage.cost": c.cost,
        }
        if c.user is not None:
            attrs["user.id"] = c.user
        if c.plan is not None:
            attrs["property.plan"] = c.plan
        span = tracer.start_span(f"chat {c.model}", kind=SpanKind.CLIENT, attributes=attrs, start_time=start)
        if c.error:
            span.set_attribute("error.type", "RateLimitError")
            span.set_status(Status(StatusCode.ERROR))
        span.end(end_time=start + 300_000_000)
    provider.shutdown()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    svc = Service(tmp_path_factory.mktemp("dashboard") / "um.duckdb")
    app = svc.start()
    send(svc.target)
    with app.store.reader() as con:
        assert query_totals(con, "31d").requests == len(CALLS), "every span was stored"
    yield svc
    svc.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True)
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Browser, served: Service) -> Iterator[Page]:
    """A fresh page; fails the test on any script error, console error or request off this server."""
    yield from watched_page(browser, served)


def watched_page(browser: Browser, svc: Service) -> Iterator[Page]:
    """A fresh page of ``svc``; fails the test on any script error, console error or request elsewhere."""
    context = browser.new_context(viewport=DESKTOP)
    tab = context.new_page()
    problems: list[str] = []
    assert svc.app is not None
    origin = svc.app.api_url
    tab.on("pageerror", lambda error: problems.append(f"script error: {error}"))
    # (The browser logs every 4xx answer as a console error; those are not the page's own errors.)
    tab.on(
        "console",
        lambda m: (
            problems.append(f"console: {m.text}")
            if m.type == "error" and not m.text.startswith("Failed to load resource")
            else None
        ),
    )
    tab.on("request", lambda r: None if r.url.startswith(origin) else problems.append(f"off-server: {r.url}"))
    yield tab
    context.close()
    assert problems == [], problems


def url(served: Service, path: str = "/") -> str:
    assert served.app is not None
    return served.app.api_url + path


def ready(page: Page) -> None:
    page.wait_for_selector("body[data-state=ready]", timeout=15_000)


def shot(page: Page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def table(page: Page, selector: str = "#users") -> list[dict[str, str]]:
    """The rows of a table as {column field: data-value or text}."""
    return page.eval_on_selector(
        selector,
        """t => {
            const fields = [...t.tHead.rows[0].cells].map(c => c.dataset.field || c.textContent.trim());
            return [...t.tBodies[0].rows].map(r => Object.fromEntries([...r.cells].map((c, i) =>
                [fields[i], c.dataset.value !== undefined ? c.dataset.value : c.textContent.trim()])));
        }""",
    )


def users_in_table(page: Page) -> dict[str, dict[str, str]]:
    return {row["user_id"]: row for row in table(page)}


def check_rows(page: Page, want: dict[str | None, dict[str, Any]], exact: bool = True) -> None:
    """The users table shows these users with these figures (and, if exact, no one else)."""
    got = users_in_table(page)
    named = {u if u is not None else "(no user id)" for u in want}
    assert set(got) == named if exact else named <= set(got)
    for user, w in want.items():
        row = got[user if user is not None else "(no user id)"]
        assert int(row["requests"]) == w["requests"], user
        assert Decimal(row["cost_usd"]) == w["cost"], user
        assert int(row["total_tokens"]) == w["tokens"], user
        assert float(row["error_rate"]) == pytest.approx(w["errors"] / w["requests"]), user


class TestUsersPage:
    def test_the_table_shows_each_users_figures_and_totals(self, page: Page, served: Service) -> None:
        """30 days: every user with requests, cost (exact), tokens and error rate; totals above."""
        page.goto(url(served, "/?page=1"))
        ready(page)
        want = expected(30 * D)
        assert page.locator("#page-text").inner_text() == f"1–25 of {len(want)} users"
        rows = table(page)
        assert len(rows) == 25
        costs = [Decimal(r["cost_usd"]) for r in rows]
        assert costs == sorted(costs, reverse=True), "cost, costliest first, by default"
        page.click("#next")
        ready(page)
        assert "page=2" in page.url
        rows += table(page)
        assert page.locator("#page-text").inner_text() == f"26–{len(want)} of {len(want)} users"
        assert page.locator("#next").is_disabled()
        assert len({r["user_id"] for r in rows}) == len(want), "the pages cover every user once"
        page.goto(url(served, "/?window=30d&sort=-requests&q=AD"))  # ada, and no one else has an "ad"
        ready(page)
        check_rows(page, {"ada": want["ada"]})
        cards = page.locator("#totals .value").all_inner_texts()
        named = [u for u in want if u is not None]
        assert cards[0] == str(len(named)) and cards[1] == str(sum(w["requests"] for w in want.values()))
        total_cost = sum(w["cost"] for w in want.values())
        assert cards[2] == f"${total_cost:,.2f}"
        shot(page, "users-30d")

    def test_sorting_by_columns(self, page: Page, served: Service) -> None:
        """A header click sorts by that column (numbers descending first); a second click reverses it."""
        page.goto(url(served, "/?window=7d"))
        ready(page)
        page.click("th[data-field=requests] button")
        ready(page)
        assert "sort=-requests" in page.url
        assert page.get_attribute("th[data-field=requests]", "aria-sort") == "descending"
        got = [int(r["requests"]) for r in table(page)]
        assert got[:4] == [30, 10, 8, 2] and got == sorted(got, reverse=True)  # ace, bob, ada, no user
        page.click("th[data-field=requests] button")
        ready(page)
        assert "sort=requests" in page.url
        got = [int(r["requests"]) for r in table(page)]
        assert got == sorted(got)
        page.click("th[data-field=user_id] button")
        ready(page)
        names = [r["user_id"] for r in table(page)]
        assert names[:5] == ["ace", "ada", "bob", "cy", "user-01"]
        page.click("th[data-field=error_rate] button")
        ready(page)
        assert table(page)[0]["user_id"] == "bob"  # 2 errors in 10 requests
        shot(page, "users-sorted-by-error-rate")

    @pytest.mark.parametrize(
        ("choice", "window"), [("24h", D), ("7d", 7 * D), ("30d", 30 * D)], ids=["24h", "7d", "30d"]
    )
    def test_the_window_picker_changes_the_figures(
        self, page: Page, served: Service, choice: str, window: timedelta
    ) -> None:
        """Each preset shows exactly the users and requests of that window."""
        page.goto(url(served, "/?window=7d&sort=user_id" if choice == "30d" else "/?sort=user_id"))
        ready(page)
        page.select_option("#window", choice)
        ready(page)
        assert (f"window={choice}" in page.url) == (choice != "30d")
        want = expected(window)
        assert page.locator("#page-text").inner_text().endswith(f" of {len(want)} users")
        # Sorted by id, the named users come before the user-NN on the first page.
        principals = {u: w for u, w in want.items() if u in ("ace", "ada", "bob", "cy", "dee")}
        check_rows(page, principals, exact=window == D)
        first = [r["user_id"] for r in table(page)][: len(principals)]
        assert first == sorted(principals)
        requests = sum(w["requests"] for w in want.values())
        assert page.locator("#totals .value").nth(1).inner_text() == f"{requests:,}"
        shot(page, f"users-window-{choice}")

    def test_a_custom_window(self, page: Page, served: Service) -> None:
        """From/To (UTC) pick out cy's four old requests only."""
        page.goto(url(served, "/"))
        ready(page)
        page.select_option("#window", "custom")
        since, until = NOW - 21 * D, NOW - 19 * D
        page.fill("#since", since.strftime("%Y-%m-%dT%H:%M"))
        page.fill("#until", until.strftime("%Y-%m-%dT%H:%M"))
        page.click("#custom-window button[type=submit]")
        ready(page)
        assert "since=" in page.url
        # cy's four calls 20 days ago are the only ones between 21 and 19 days ago.
        check_rows(page, {"cy": {"requests": 4, "cost": Decimal("0.08"), "tokens": 2400, "errors": 0}})
        shot(page, "users-custom-window")

    @pytest.mark.parametrize(("since", "window"), [("24h", D), ("7d", 7 * D), ("30d", 30 * D)])
    def test_a_since_that_names_a_preset_selects_it(
        self, page: Page, served: Service, since: str, window: timedelta
    ) -> None:
        """/?since=7d (the API's spelling, in a shared link) is the 7-day preset, not an empty Custom."""
        page.goto(url(served, f"/?since={since}&sort=user_id"))
        ready(page)
        assert page.locator("#window").input_value() == since
        assert page.locator("#custom-window").is_hidden()
        want = expected(window)
        assert page.locator("#page-text").inner_text().endswith(f" of {len(want)} users")

    def test_a_since_that_names_no_preset_is_custom_with_its_boxes_filled(
        self, page: Page, served: Service
    ) -> None:
        """since=12h, or an instant with an offset, shows Custom with the window the server read, in UTC."""
        page.goto(url(served, "/?since=12h"))
        ready(page)
        assert page.locator("#window").input_value() == "custom"
        since, until = page.input_value("#since"), page.input_value("#until")
        assert (
            page.locator("#window-text").inner_text()
            == f"{since.replace('T', ' ')} – {until.replace('T', ' ')} UTC"
        )
        read = datetime.fromisoformat(since).replace(tzinfo=UTC)
        assert abs(read - (datetime.now(UTC) - 12 * H)) < timedelta(minutes=10)
        # ada's, cy's and ace's requests of the last 5 hours: the API's 12 hours.
        assert set(users_in_table(page)) == set(expected(12 * H)) == {"ada", "cy", "ace"}
        page.goto(
            url(served, "/?" + urlencode({"since": "2026-01-02T03:04:00+02:00", "until": "2026-01-03"}))
        )
        ready(page)
        assert (page.input_value("#since"), page.input_value("#until")) == (
            "2026-01-02T01:04",
            "2026-01-03T00:00",
        )
        shot(page, "users-custom-window-from-the-address")

    def test_a_property_filter_narrows_the_table(self, page: Page, served: Service) -> None:
        """plan = free keeps bob, dee and the user-NN; removing the chip brings everyone back."""
        page.goto(url(served, "/"))
        ready(page)
        page.select_option("#filter-key", "plan")
        page.fill("#filter-value", "free")
        page.click("#add-filter button[type=submit]")
        ready(page)
        assert "property=plan%3Dfree" in page.url
        want = expected(30 * D, plan="free")
        assert page.locator("#page-text").inner_text() == f"1–25 of {len(want)} users"
        page.goto(page.url + "&q=b")
        ready(page)
        check_rows(page, {"bob": want["bob"]})
        assert page.locator(".chip").inner_text().startswith("plan=free")
        shot(page, "users-filtered-plan-free")
        page.click(".chip button")
        ready(page)
        assert "property" not in page.url
        assert set(users_in_table(page)) == {"bob"}, "the search stays"

    def test_a_model_filter_narrows_the_table_whatever_the_case(self, page: Page, served: Service) -> None:
        """?model=GPT-4O keeps the users of gpt-4o with their gpt-4o figures; its chip removes it."""
        page.goto(url(served, "/?model=GPT-4O"))
        ready(page)
        check_rows(page, expected(30 * D, model="gpt-4o"))
        assert page.locator(".chip").inner_text().startswith("model=GPT-4O")
        shot(page, "users-filtered-model")
        page.click(".chip button")
        ready(page)
        assert "model" not in page.url
        assert len(users_in_table(page)) == 25, "everyone again, a page of them"

    def test_search_as_you_type(self, page: Page, served: Service) -> None:
        """Typing in the search box narrows the table to ids containing the text."""
        page.goto(url(served, "/"))
        ready(page)
        page.fill("#search", "USER-1")
        page.wait_for_url(re.compile(r"q=USER-1"))
        ready(page)
        assert set(users_in_table(page)) == {f"user-{n}" for n in range(10, 20)}, "any case, substring"

    def test_the_anomalies_panel_lists_what_the_service_flags(self, page: Page, served: Service) -> None:
        """The panel lists the users anomalies() flags for the last hour, or says there are none."""
        assert served.app is not None
        with served.app.store.reader() as con:
            flagged = [f.user_id for f in anomalies(con).findings]
        assert "ace" in flagged
        page.goto(url(served, "/"))
        ready(page)
        page.wait_for_selector("#anomalies[data-state=ready]")
        panel = page.locator("#anomalies")
        assert panel.locator("h2").inner_text() == "Unusual in the last hour"
        assert panel.locator("li a").all_inner_texts() == flagged
        if not flagged:
            assert "No user is unusual" in panel.inner_text()


class TestUserPage:
    def test_figures_charts_models_and_latest_requests(self, page: Page, served: Service) -> None:
        """ada over 7 days: one bar per UTC day of the window, values on the right days."""
        page.goto(url(served, "/users/ada?window=7d"))
        ready(page)
        assert page.locator("#user-id").inner_text() == "ada"
        cards = dict(
            zip(
                page.locator("#user-cards .label").all_inner_texts(),
                page.locator("#user-cards .value").all_inner_texts(),
                strict=True,
            )
        )
        days_active = {c.start.date() for c in CALLS if c.user == "ada" and c.ago < 7 * D}
        assert cards["Requests"] == "8" and cards["Cost"] == "$1.25"
        assert cards["Active days"] == str(len(days_active)) and cards["Error rate"] == "0.0 %"
        days = (NOW.date() - (NOW - 7 * D).date()).days + 1
        for chart, value in (("#requests-chart", lambda c: 1), ("#cost-chart", lambda c: Decimal(c.cost))):
            bars = page.eval_on_selector_all(
                f"{chart} rect.bar", "bs => bs.map(b => [b.dataset.day, Number(b.dataset.value)])"
            )
            assert len(bars) == days, "one point per day"
            assert [d for d, _ in bars] == [
                str((NOW - 7 * D).date() + timedelta(days=i)) for i in range(days)
            ]
            want: dict[str, Decimal] = {}
            for c in CALLS:
                if c.user == "ada" and c.ago < 7 * D:
                    day = str(c.start.date())
                    want[day] = want.get(day, Decimal(0)) + value(c)
            assert {d: v for d, v in bars if v} == {d: float(v) for d, v in want.items()}
        models = table(page, "#models")
        assert [(m["Model"], m["Requests"]) for m in models] == [("gpt-4o", "8")]
        recent = table(page, "#recent")
        assert len(recent) == 8
        assert [r["Input"] for r in recent] == ["4000"] * 3 + ["2000"] * 5, "newest first"
        shot(page, "user-ada-7d")
        page.click("#models a.model")
        page.wait_for_url(re.compile(r"model=gpt-4o"))  # a real navigation
        ready(page)
        check_rows(page, expected(7 * D, model="gpt-4o"))

    def test_a_link_to_a_user_and_an_unknown_user(self, page: Page, served: Service) -> None:
        """A user's link opens their page; an id never seen says so instead of showing zeros."""
        page.goto(url(served, "/"))
        ready(page)
        page.click("a:text-is('bob')")
        page.wait_for_url(re.compile(r"/users/bob"))  # a real navigation: the old page is still "ready"
        ready(page)
        assert page.url.split("?")[0].endswith("/users/bob")
        assert len(table(page, "#recent")) == 10
        assert table(page, "#recent")[0]["Status"] in ("ok", "error: RateLimitError")
        page.goto(url(served, "/users/" + quote("no such user/ünï", safe="")))
        page.wait_for_selector("body[data-state=ready]")
        assert "no requests were ever recorded for user 'no such user/ünï'" in page.inner_text("main")
        shot(page, "user-unknown")


class TestPropertiesPage:
    def test_cost_and_users_per_plan_with_average_cost_per_user(self, page: Page, served: Service) -> None:
        """Per plan: users, requests, exact cost and average cost per user; a value links to its users."""
        page.goto(url(served, "/properties"))
        ready(page)
        rows = {r["Value"]: r for r in table(page, "#property-values")}
        plans: dict[str, dict[str, Any]] = {}
        for c in CALLS:
            p = plans.setdefault(c.plan or "(not set)", {"users": set(), "requests": 0, "cost": Decimal(0)})
            p["requests"] += 1
            p["cost"] += Decimal(c.cost)
            if c.user:
                p["users"].add(c.user)
        assert set(rows) == set(plans)
        for value, p in plans.items():
            row = rows[value]
            assert int(row["Users"]) == len(p["users"]) and int(row["Requests"]) == p["requests"]
            assert Decimal(row["Cost"]) == p["cost"]
            if p["users"]:
                assert Decimal(row["Avg cost per user"]) == (p["cost"] / len(p["users"])).quantize(
                    Decimal("1e-9")
                )
        shot(page, "properties-plan")
        page.click("#property-values a:text-is('enterprise')")
        page.wait_for_url(re.compile(r"property=plan%3Denterprise"))  # a real navigation
        ready(page)
        assert set(users_in_table(page)) == {"ada"}

    def test_a_key_with_more_values_than_one_answer_holds_says_how_many_it_shows(
        self, browser: Browser, tmp_path: Path
    ) -> None:
        """1,001 values: the page lists the 1,000 costliest (the API's default) and says so."""
        svc = Service(tmp_path / "um.duckdb")
        app = svc.start()
        try:
            start = int((NOW - H).timestamp() * 1e9)
            calls = [span(chat(f"u{i}", **{"property.ticket": f"t{i:04}"}), start=start) for i in range(1001)]
            app.ingestor.export(request(calls))
            context = browser.new_context(viewport=DESKTOP)
            tab = context.new_page()
            tab.goto(url(svc, "/properties?key=ticket"))
            ready(tab)
            assert tab.locator("#values-cut").inner_text() == "The 1,000 costliest of 1,001 values."
            assert len(table(tab, "#property-values")) == 1000
            context.close()
        finally:
            svc.stop()


def api_json(svc: Service, path: str) -> Any:
    with urllib.request.urlopen(url(svc, path), timeout=30) as response:
        return json.loads(response.read())


def api_calls(page: Page, path: str) -> list[dict[str, list[str]]]:
    """Record the query strings of the page's requests to one API path (from now on)."""
    seen: list[dict[str, list[str]]] = []
    page.on(
        "request",
        lambda r: seen.append(parse_qs(urlsplit(r.url).query)) if urlsplit(r.url).path == path else None,
    )
    return seen


def month_start(zone: str) -> datetime:
    local = NOW.astimezone(ZoneInfo(zone))
    return local.replace(day=1, hour=0, minute=0, second=0, microsecond=0).astimezone(UTC)


class TestPeriodAndZone:
    def test_the_period_picker_offers_the_periods_and_the_last_12_months(
        self, page: Page, served: Service
    ) -> None:
        """Today ... last month, then this month and the 11 before it (ISO names), in the page's zone."""
        page.goto(url(served, "/"))
        ready(page)
        values = page.eval_on_selector_all("#period option", "os => os.map(o => o.value)")
        months, year, month = [], NOW.year, NOW.month
        for _ in range(12):
            months.append(f"{year}-{month:02}")
            year, month = (year, month - 1) if month > 1 else (year - 1, 12)
        assert values == [
            "",
            "today",
            "yesterday",
            "this_week",
            "last_week",
            "this_month",
            "last_month",
            *months,
        ]

    def test_the_period_picker_sends_since_this_month(self, page: Page, served: Service) -> None:
        """Choosing "This month" asks the API for since=this_month (no until) and shows that month's users."""
        page.goto(url(served, "/?sort=user_id"))
        ready(page)
        calls = api_calls(page, "/api/v1/users")
        page.select_option("#period", "this_month")
        page.wait_for_url(re.compile(r"since=this_month"))
        ready(page)
        assert calls and all(c["since"] == ["this_month"] and "until" not in c for c in calls)
        assert page.locator("#window").input_value() == "period"
        assert page.locator("#period").input_value() == "this_month"
        start = month_start("UTC")
        want = sum(1 for c in CALLS if c.start >= start)
        assert page.locator("#totals .value").nth(1).inner_text() == f"{want:,}"
        assert page.locator("#window-text").inner_text().startswith(start.strftime("%Y-%m-%d 00:00 – "))
        page.select_option("#window", "7d")  # a rolling window again
        page.wait_for_url(re.compile(r"window=7d"))
        ready(page)
        assert "since" not in page.url and page.locator("#period").input_value() == ""

    def test_the_time_zone_choice_sends_tz(self, page: Page, served: Service) -> None:
        """A zone picked in the page goes to every API call as tz=, and the window is shown in it."""
        page.goto(url(served, "/?since=this_month"))
        ready(page)
        assert page.locator("#tz").input_value() == ""  # the server's zone: no tz sent
        calls = api_calls(page, "/api/v1/totals")
        page.select_option("#tz", "Asia/Kolkata")
        page.wait_for_url(re.compile(r"tz=Asia%2FKolkata"))
        ready(page)
        assert calls and all(c["tz"] == ["Asia/Kolkata"] and c["since"] == ["this_month"] for c in calls)
        start = month_start("Asia/Kolkata")
        want = sum(1 for c in CALLS if c.start >= start)
        assert page.locator("#totals .value").nth(1).inner_text() == f"{want:,}"
        text = page.locator("#window-text").inner_text()
        assert text.startswith(f"{NOW.astimezone(ZoneInfo('Asia/Kolkata')):%Y-%m}-01 00:00 – ")
        assert text.endswith(" Asia/Kolkata") and "Asia/Kolkata" in page.inner_text("footer")
        page.click("#nav-properties")
        page.wait_for_url(re.compile(r"/properties\?.*tz=Asia%2FKolkata"))  # links keep the zone
        ready(page)
        page.select_option("#tz", "other")
        page.fill("#tz-text", "Asia/Kathmandu")
        page.click("#tz-form button[type=submit]")
        page.wait_for_url(re.compile(r"tz=Asia%2FKathmandu"))
        ready(page)
        assert page.locator("#tz").input_value() == "Asia/Kathmandu"
        shot(page, "properties-in-kathmandu")

    def test_a_users_days_are_local_days_of_the_chosen_zone(self, page: Page, served: Service) -> None:
        """In Asia/Kolkata, ada's bars stand on the local days of her requests (a day starts 18:30 UTC)."""
        kolkata = ZoneInfo("Asia/Kolkata")
        page.goto(url(served, "/users/ada?window=7d&tz=Asia%2FKolkata"))
        ready(page)
        bars = page.eval_on_selector_all(
            "#requests-chart rect.bar", "bs => bs.map(b => [b.dataset.day, Number(b.dataset.value)])"
        )
        first, last = (NOW - 7 * D).astimezone(kolkata).date(), NOW.astimezone(kolkata).date()
        assert [d for d, _ in bars] == [
            str(first + timedelta(days=i)) for i in range((last - first).days + 1)
        ]
        want: dict[str, int] = {}
        for c in CALLS:
            if c.user == "ada" and c.ago < 7 * D:
                day = str(c.start.astimezone(kolkata).date())
                want[day] = want.get(day, 0) + 1
        assert {d: v for d, v in bars if v} == want


PAID_CALLS = [  # (user, plan, input tokens, output tokens) of gpt-4o, two hours ago
    ("ann", "pro", 1000, 100),
    ("ben", "free", 10_000, 5000),
    ("cat", "pro", 2000, 0),
    ("dan", "free", 100, 100),
]
PAID_REVENUE = {"ann": "50", "ben": "0.01", "cat": "20", "dan": "-1"}  # dan was refunded


@pytest.fixture(scope="module")
def paid(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """A service with PAID_CALLS and imported revenue: ben pays less than he costs, dan was refunded."""
    svc = Service(tmp_path_factory.mktemp("paid") / "um.duckdb")
    app = svc.start()
    start = int((NOW - 2 * H).timestamp() * 1e9)
    for user, plan, inp, out in PAID_CALLS:
        app.ingestor.export(
            request([span(chat(user, "gpt-4o", inp, out, **{"property.plan": plan}), start=start)])
        )
    with app.store.reader() as con:
        add_revenue(con, [Record(f"r-{u}", u, amount, NOW - D) for u, amount in PAID_REVENUE.items()])
    yield svc
    svc.stop()


@pytest.fixture
def paid_page(browser: Browser, paid: Service) -> Iterator[Page]:
    """A fresh page of the paid service, watched as ``page`` is."""
    yield from watched_page(browser, paid)


class TestProfitability:
    def test_without_revenue_the_page_says_how_to_add_it(self, page: Page, served: Service) -> None:
        """No revenue anywhere: the page says so and how to add it, with no empty tables, and the
        users table has no margin columns."""
        page.goto(url(served, "/"))
        ready(page)
        assert page.locator("#users").count() == 1
        assert page.locator("#users th[data-field=margin_usd]").count() == 0
        page.click("#nav-profitability")
        page.wait_for_url(re.compile(r"/profitability"))
        ready(page)
        notice = page.locator("#no-revenue").inner_text()
        assert "No revenue is configured" in notice
        assert "[billing]" in notice and "user-metrics revenue import" in notice
        assert page.locator("table").count() == 0
        shot(page, "profitability-no-revenue")

    def test_least_and_most_profitable_losses_and_margin_by_plan(
        self, paid_page: Page, paid: Service
    ) -> None:
        """Least profitable users in the API's order, most profitable, the users whose cost exceeds their
        revenue, and margin per plan, each amount the API's exact decimal."""
        least = api_json(paid, "/api/v1/users?sort=margin_usd&limit=100")["users"]
        assert [u["user_id"] for u in least] == ["dan", "ben", "cat", "ann"]
        paid_page.goto(url(paid, "/profitability"))
        ready(paid_page)
        rows = table(paid_page, "#least-profitable")
        assert [r["User"] for r in rows] == [u["user_id"] for u in least]
        for row, u in zip(rows, least, strict=True):
            assert (row["Revenue"], row["Cost"], row["Margin"]) == (
                u["revenue_usd"],
                u["cost_usd"],
                u["margin_usd"],
            )
            assert Decimal(row["Margin"]) == Decimal(u["revenue_usd"]) - Decimal(u["cost_usd"])
        assert [r["User"] for r in table(paid_page, "#most-profitable")] == ["ann", "cat", "ben", "dan"]
        losses = table(paid_page, "#losses")
        assert [r["User"] for r in losses] == ["dan", "ben"]  # ben's 0.01 is less than his gpt-4o calls
        assert all(Decimal(r["Margin"]) < 0 for r in losses)
        plans = {r["Value"]: r for r in table(paid_page, "#margin-by-property")}
        assert plans["pro"]["Revenue"] == "70.000000000"  # ann and cat
        assert plans["free"]["Revenue"] == "-0.990000000"  # ben, and dan's refund
        totals = api_json(paid, "/api/v1/totals")
        cards = dict(
            zip(
                paid_page.locator("#profit-cards .label").all_inner_texts(),
                paid_page.locator("#profit-cards .value").all_inner_texts(),
                strict=True,
            )
        )
        assert cards["Revenue"] == "$69.01" and totals["revenue_usd"] == "69.010000000"
        shot(paid_page, "profitability")

    def test_margin_columns_on_the_users_table(self, paid_page: Page, paid: Service) -> None:
        """With revenue known, the users table has revenue, margin and margin ratio; a click on Margin
        sorts least profitable first, as the API does."""
        paid_page.goto(url(paid, "/"))
        ready(paid_page)
        api = {u["user_id"]: u for u in api_json(paid, "/api/v1/users")["users"]}
        for user, row in users_in_table(paid_page).items():
            assert (row["revenue_usd"], row["margin_usd"]) == (
                api[user]["revenue_usd"],
                api[user]["margin_usd"],
            )
        paid_page.click("th[data-field=margin_usd] button")
        ready(paid_page)
        assert "sort=margin_usd" in paid_page.url
        assert [r["user_id"] for r in table(paid_page)] == ["dan", "ben", "cat", "ann"]
        dan = users_in_table(paid_page)["dan"]  # refunded: revenue below zero, and a loss
        assert dan["revenue_usd"] == "-1.000000000" and dan["margin_usd"].startswith("-1.001")
        shot(paid_page, "users-with-margins")


def test_an_empty_window_of_a_service_with_revenue(paid_page: Page, paid: Service) -> None:
    """A window without requests or revenue: an empty table, not the getting-started text and no
    error (the page asks for the totals of every stored request, up to 9999-12-31, to tell)."""
    paid_page.goto(url(paid, "/?since=2020-01-01&until=2020-02-01"))
    ready(paid_page)
    assert paid_page.locator("#getting-started").count() == 0
    assert "No requests in this window." in paid_page.inner_text("main")


def test_margin_by_the_servers_plan_property(browser: Browser, tmp_path: Path) -> None:
    """With [billing] plan_property = tier, margin by plan breaks down by tier, not by plan (which
    the page picks when the server names none)."""
    svc = Service(
        tmp_path / "um.duckdb", plan_property="tier", plan_prices=("gold=30/month", "basic=0/month")
    )
    app = svc.start()
    try:
        start = int((NOW - H).timestamp() * 1e9)
        for user, tier in (("u1", "gold"), ("u2", "basic")):
            attrs = chat(user, **{"property.tier": tier, "property.plan": "legacy"})
            app.ingestor.export(request([span(attrs, start=start)]))
        with app.store.reader() as con:
            add_revenue(con, [Record("r1", "u2", "5", NOW - D)])
        context = browser.new_context(viewport=DESKTOP)
        tab = context.new_page()
        tab.goto(url(svc, "/profitability"))
        ready(tab)
        assert tab.locator("#profit-key").input_value() == "tier"
        assert {r["Value"] for r in table(tab, "#margin-by-property")} == {"gold", "basic"}
        context.close()
    finally:
        svc.stop()


def test_money_is_rounded_on_its_decimal_digits(page: Page, served: Service) -> None:
    """Amounts are formatted from the exact decimal text, half to even, never through a float."""
    page.goto(url(served, "/"))
    ready(page)
    cases = {
        "12345678901234.995000000": "$12,345,678,901,235",  # beyond a double's 15-16 digits
        "2.005": "$2.00",  # a float (2.00499999...) and half-even agree; 2.015 below does not round down
        "2.015": "$2.02",
        "0.004999999999999999999": "$0.0050",
        "0.000000150": "$0.00000015",
        "-0.065000000": "-$0.065",
        "0.000000000": "$0",
        "99.995": "$100.00",
    }
    got = page.evaluate("cases => Object.fromEntries(cases.map(c => [c, usd(c)]))", list(cases))
    assert got == cases


class TestCoveragePage:
    def test_shares_per_scope_skipped_spans_and_unread_keys(self, browser: Browser, tmp_path: Path) -> None:
        """/coverage lists per service and scope the shares with a user, a session and a cost, and
        what the service saw: the skipped LLM-looking spans with their keys, and the unread keys."""
        svc = Service(tmp_path / "um.duckdb")
        app = svc.start()
        try:
            app.ingestor.export(two_scopes())
            context = browser.new_context(viewport=DESKTOP)
            tab = context.new_page()
            errors: list[str] = []
            tab.on("pageerror", lambda error: errors.append(str(error)))
            tab.goto(url(svc, "/"))
            ready(tab)
            tab.click("#nav-coverage")
            tab.wait_for_url(re.compile(r"/coverage"))
            ready(tab)
            shares = {r["Scope"]: r for r in table(tab, "#coverage-scopes")}
            assert set(shares) == {COMPLETE[0], PARTIAL[0]}
            full, part = shares[COMPLETE[0]], shares[PARTIAL[0]]
            assert (full["Service"], full["Version"], full["Requests"]) == ("shop", "1.0", "4")
            assert [float(full[c]) for c in ("With user", "With session", "With cost")] == [1, 1, 1]
            assert [float(part[c]) for c in ("With user", "With session", "With cost")] == [0, 0, 0]
            spans = {r["Scope"]: r for r in table(tab, "#coverage-spans")}
            seen = spans[PARTIAL[0]]
            assert (seen["LLM spans"], seen["LLM-looking, skipped"]) == ("3", "2")
            assert seen["Skipped spans"] == "embed text-embedding-3-small ×2"
            assert (
                seen["Their keys"]
                == "gen_ai.request.model ×2, gen_ai.system ×2, gen_ai.usage.total_tokens ×2"
            )
            assert seen["Keys no convention reads"] == (
                "acme.customer ×3, acme.tier ×2, gen_ai.openai.response.system_fingerprint ×1"
            )
            assert spans[COMPLETE[0]]["Keys no convention reads"] == "–"
            shot(tab, "coverage")
            context.close()
        finally:
            svc.stop()
        assert errors == []


class TestPhoneAndToken:
    @pytest.mark.parametrize("path", ["/", "/users/ada", "/properties", "/profitability", "/coverage"])
    def test_usable_on_a_phone_sized_screen(self, browser: Browser, served: Service, path: str) -> None:
        """At 390 px nothing makes the page scroll sideways (wide tables scroll inside their box)."""
        context = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
        tab = context.new_page()
        tab.goto(url(served, path))
        ready(tab)
        assert tab.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        shot(tab, "phone" + (path.replace("/", "-").rstrip("-") or "-users"))
        context.close()

    def test_files_are_local_and_locked_down(self, served: Service) -> None:
        """Pages and assets come from the service, with a CSP allowing this origin only, without a token."""
        for path, kind in (
            ("/", "text/html"),
            ("/static/app.js", "text/javascript"),
            ("/static/profit.js", "text/javascript"),
            ("/static/app.css", "text/css"),
        ):
            with urllib.request.urlopen(url(served, path), timeout=10) as response:
                assert response.headers["Content-Type"].startswith(kind)
                assert "default-src 'none'" in response.headers["Content-Security-Policy"]
                # No address outside this server (the SVG namespace is a name, never fetched).
                body = response.read().decode().replace("http://www.w3.org/2000/svg", "")
                assert "http://" not in body and "https://" not in body and "//cdn" not in body


class PrefixProxy:
    """A reverse proxy serving the service's / at /usage/ (as nginx's ``location /usage/`` would).

    Every path the browser asks for is kept; anything outside /usage/ is a 404 and a miss.
    """

    PREFIX = "/usage/"

    def __init__(self, upstream: str) -> None:
        target = urlsplit(upstream)
        proxy = self
        self.seen: list[str] = []
        self.misses: list[str] = []

        class Forward(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                proxy.seen.append(self.path)
                if not self.path.startswith(proxy.PREFIX):
                    proxy.misses.append(self.path)
                    self.send_error(404)
                    return
                conn = http.client.HTTPConnection(target.hostname, target.port, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() in ("accept", "authorization")}
                conn.request("GET", self.path[len(proxy.PREFIX) - 1 :], headers=headers)
                answer = conn.getresponse()
                body = answer.read()
                conn.close()
                self.send_response(answer.status)
                for name, value in answer.getheaders():
                    if name.lower() not in ("connection", "server", "date"):
                        self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Forward)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class TestUnderAPathPrefix:
    def test_every_page_works_behind_a_proxy_that_serves_it_at_a_prefix(
        self, browser: Browser, served: Service
    ) -> None:
        """Files, API calls, links, sorting and deep links all stay under the proxy's /usage/."""
        assert served.app is not None
        proxy = PrefixProxy(served.app.api_url)
        context = browser.new_context(viewport=DESKTOP)
        tab = context.new_page()
        errors: list[str] = []
        tab.on("pageerror", lambda error: errors.append(str(error)))
        tab.on("request", lambda r: None if r.url.startswith(proxy.url + "/usage/") else errors.append(r.url))
        try:
            tab.goto(proxy.url + "/usage/?window=7d")
            ready(tab)
            assert "ada" in users_in_table(tab)
            tab.click("th[data-field=requests] button")
            ready(tab)
            assert tab.url.startswith(proxy.url + "/usage/?") and "sort=-requests" in tab.url
            tab.click("#users a:text-is('ada')")
            tab.wait_for_url(re.compile(r"/usage/users/ada\?"))
            ready(tab)
            assert tab.locator("#user-id").inner_text() == "ada"
            assert tab.locator("#requests-chart rect.bar").count() == 8
            tab.click("#nav-properties")
            tab.wait_for_url(re.compile(r"/usage/properties"))
            ready(tab)
            tab.click("#property-values a:text-is('enterprise')")
            tab.wait_for_url(re.compile(r"/usage/\?.*property=plan%3Denterprise"))
            ready(tab)
            assert set(users_in_table(tab)) == {"ada"}
            tab.goto(proxy.url + "/usage/users/" + quote("no such user/ünï", safe=""))  # a deep link
            ready(tab)
            assert "no requests were ever recorded" in tab.inner_text("main")
            shot(tab, "under-a-path-prefix")
        finally:
            context.close()
            proxy.close()
        assert errors == [] and proxy.misses == []
        assert any(p.startswith("/usage/api/v1/users/ada/timeseries") for p in proxy.seen)
        assert "/usage/static/app.js" in proxy.seen


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    svc = Service(tmp_path_factory.mktemp("guarded") / "um.duckdb", read_tokens=(READ_TOKEN,))
    svc.start()
    send(svc.target)
    yield svc
    svc.stop()


class TestReadToken:
    def test_missing_then_wrong_then_right_token(self, browser: Browser, guarded: Service) -> None:
        """No token: a clear request for one; a wrong one: a clear refusal; the right one: the data."""
        context = browser.new_context(viewport=DESKTOP)
        tab = context.new_page()
        tab.goto(url(guarded, "/"))
        tab.wait_for_selector("#auth:not([hidden])")
        assert "This server needs a read token" in tab.inner_text("#auth-message")
        assert tab.locator("#users").count() == 0, "no data without a token"
        shot(tab, "token-missing")
        tab.fill("#token-input", "not-the-token-at-all-000")
        tab.click("#token-form button")
        # A locator wait, not wait_for_function: Playwright polls a string predicate with eval(),
        # which the page's CSP forbids once the poll leaves the first DevTools call (a flaky failure).
        tab.locator("#auth-message", has_text="refused").wait_for()
        assert "The read token was refused by the server (401 Unauthorized)" in tab.inner_text(
            "#auth-message"
        )
        shot(tab, "token-wrong")
        tab.fill("#token-input", READ_TOKEN)
        tab.click("#token-form button")
        ready(tab)
        assert tab.locator("#auth").is_hidden()
        assert "ada" in users_in_table(tab)
        tab.goto(url(guarded, "/users/ada"))  # the token stays for the session
        ready(tab)
        context.close()

    def test_a_token_in_the_fragment_is_used_and_removed_from_the_address(
        self, browser: Browser, guarded: Service
    ) -> None:
        """/#token=... (never sent to the server) signs the page in and leaves the address bar."""
        context = browser.new_context(viewport=DESKTOP)
        tab = context.new_page()
        tab.goto(url(guarded, "/properties#token=" + READ_TOKEN))
        ready(tab)
        assert "#" not in tab.url and table(tab, "#property-values")
        context.close()


class TestAnEmptyService:
    def test_it_says_how_to_send_spans(self, browser: Browser, tmp_path: Path) -> None:
        """No request stored at all: the users page tells how to point an exporter here, no empty table."""
        svc = Service(tmp_path / "empty.duckdb")
        app = svc.start()
        context = browser.new_context(viewport=DESKTOP)
        tab = context.new_page()
        errors: list[str] = []
        tab.on("pageerror", lambda error: errors.append(str(error)))
        try:
            tab.goto(app.api_url + "/")
            ready(tab)
            panel = tab.locator("#getting-started").inner_text()
            assert "No requests yet" in panel
            assert (
                "OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4317\nOTEL_EXPORTER_OTLP_PROTOCOL=grpc" in panel
            )
            assert "http://127.0.0.1:4318 with OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf" in panel
            assert "user.id" in panel and "Sending spans" in panel
            assert tab.locator("#users").count() == 0
            shot(tab, "users-empty-service")
        finally:
            context.close()
            svc.stop()
        assert errors == []

    def test_an_empty_window_of_a_used_service_is_only_an_empty_table(
        self, page: Page, served: Service
    ) -> None:
        """Requests exist, just not in this window: the table says so, without the getting-started text."""
        page.goto(url(served, "/?since=2020-01-01&until=2020-02-01"))
        ready(page)
        assert page.locator("#getting-started").count() == 0
        assert "No requests in this window." in page.inner_text("main")


def test_expected_is_not_vacuous() -> None:
    """The windows really cut the data: each holds a different set of requests."""
    counts = [sum(w["requests"] for w in expected(window).values()) for window in (D, 7 * D, 30 * D)]
    assert counts[0] < counts[1] < counts[2] == len(CALLS)
