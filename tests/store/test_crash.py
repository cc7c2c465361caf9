"""Crash safety: `user-metrics serve` SIGKILLed at random moments while clients stream Export requests.

Four client threads (three over gRPC, one over OTLP/HTTP) each send a fixed, seeded stream of Export
requests and retry the same bytes until acknowledged, backing off as the OTel SDK's OTLP exporters
do, so that a slow restart on a loaded machine is waited for. Meanwhile the server is killed with SIGKILL
a few times and started again straight away on the same address and file, with no recovery step.
Afterwards every acknowledged span must be stored exactly once (retries and deliberate duplicates
are not double-counted), nothing unsent may appear, and the rollups must agree with the rows.
"""

from __future__ import annotations

import http.client
import random
import signal
import subprocess
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import grpc
import pytest
from conftest import read_requests
from google.rpc.error_details_pb2 import RetryInfo
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from otlp import chat, request, span
from servers import start_server_listening

EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"

SEED = 20261124
CLIENTS = 4
REQUESTS_PER_CLIENT = 40
RESEND_EVERY = 10  # after every 10th request, re-send an acknowledged one (an exporter's duplicate)
USERS: list[str | None] = [f"user-{i:02d}" for i in range(36)] + [None]  # None: a span with no user id
MODELS = ("gpt-4o-mini", "gpt-4o", "o3", "no-such-model-xyz")
START = int(datetime(2026, 10, 1, 9, 30, tzinfo=UTC).timestamp() * 1e9)
DAY_NS = 86_400 * 10**9
THINK_SECONDS = (0.1, 0.3)  # a client's pause between requests: the stream lasts ~8 s of server up-time
KILL_DELAY_SECONDS = (0.2, 1.5)  # up-time between a (re)start and the next SIGKILL
CALL_TIMEOUT = 10.0
# Liveness bounds only: a start that never binds, or a server that never answers again.
START_TIMEOUT = 60.0
CLIENT_DEADLINE = 300.0
# Reconnect quickly after a crash (gRPC's default backoff starts at 1 s and grows to 2 min).
CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 300),
]

# Retries as the OTel SDK's OTLP exporters make them (the gRPC exporter's exporter.py, the HTTP
# exporters' otlp/common/http.py): a retryable failure waits 2**n times a jitter of +-20 %, or the
# delay the server gives (gRPC RetryInfo, HTTP Retry-After), and the export gives up only when the
# next wait would pass its own timeout (OTEL_EXPORTER_OTLP_TIMEOUT). Unlike the SDK's defaults, the
# first wait is 0.1 s and waits stop growing at 2 s (a restart takes about a second, several on a
# loaded machine), and the timeout is long: an export given up on would be dropped, and here that
# fails the test instead, since everything sent must end up stored.
RETRYABLE_CODES = frozenset(
    {
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)
RETRYABLE_STATUSES = frozenset({429, 502, 503, 504})
FIRST_BACKOFF_SECONDS = 0.1
MAX_BACKOFF_SECONDS = 2.0
JITTER = 0.2
EXPORT_TIMEOUT = 120.0
# An answer no exporter retries is a server bug, unless a dying server gave it: a few in a row pass.
MAX_ODD_ANSWERS = 5

Key = tuple[str, str]  # (trace_id, span_id) in hex, as stored


@dataclass(frozen=True)
class Expected:
    user_id: str | None
    model: str
    input_tokens: int
    output_tokens: int
    status: str


@dataclass(frozen=True)
class Planned:
    body: bytes
    keys: frozenset[Key]
    think: float
    resend: bool = False


def key(s: Span) -> Key:
    return (s.trace_id.hex(), s.span_id.hex())


def build_plan(client: int, expected: dict[Key, Expected]) -> list[Planned]:
    """One client's deterministic stream: 1-20 new spans per request, some overlapping, some re-sent."""
    rng = random.Random(f"{SEED}-client-{client}")
    plan: list[Planned] = []
    history: list[Span] = []
    for number in range(REQUESTS_PER_CLIENT):
        fresh = []
        for _ in range(rng.randint(1, 20)):
            attrs = chat(
                user=rng.choice(USERS),
                model=rng.choice(MODELS),
                inp=rng.randint(1, 5000),
                out=rng.randint(1, 2000),
            )
            s = span(
                attrs,
                trace_id=rng.randbytes(16),
                span_id=rng.randbytes(8),
                start=START + rng.randrange(3 * DAY_NS),
                duration_ns=rng.randint(1_000_000, 30 * 10**9),
                error=rng.random() < 0.05,
            )
            assert key(s) not in expected, "the seeded ids collided"
            expected[key(s)] = Expected(
                attrs.get("user.id"),
                attrs["gen_ai.request.model"],
                attrs["gen_ai.usage.input_tokens"],
                attrs["gen_ai.usage.output_tokens"],
                "error" if s.status.code == s.status.STATUS_CODE_ERROR else "ok",
            )
            fresh.append(s)
        spans = list(fresh)
        if history and rng.random() < 0.2:
            # A batch that repeats spans already acknowledged in an earlier request.
            spans += rng.sample(history, k=min(len(history), rng.randint(1, 3)))
            rng.shuffle(spans)
        history += fresh
        plan.append(
            Planned(
                request(spans).SerializeToString(), frozenset(map(key, spans)), rng.uniform(*THINK_SECONDS)
            )
        )
        if number % RESEND_EVERY == RESEND_EVERY - 1:
            again = plan[rng.randrange(len(plan))]
            plan.append(Planned(again.body, again.keys, rng.uniform(*THINK_SECONDS), resend=True))
    return plan


@dataclass
class Client:
    """Sends its plan in order; every request is retried (same bytes) until it is acknowledged."""

    index: int
    target: str
    plan: list[Planned]
    acked: set[Key] = field(default_factory=set)
    requests_acked: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    in_flight: bool = False
    done: bool = False
    error: BaseException | None = None

    def run(self, deadline: float) -> None:
        rng = random.Random(f"{SEED}-retries-{self.index}")
        if self.target.startswith("http://"):
            export, close = http_export(self.target)
        else:
            channel = grpc.insecure_channel(self.target, options=CHANNEL_OPTIONS)
            export = channel.unary_unary(
                EXPORT, request_serializer=None, response_deserializer=ExportTraceServiceResponse.FromString
            )
            close = channel.close
        try:
            for number, item in enumerate(self.plan):
                response = self._export_until_acknowledged(export, number, item, rng, deadline)
                assert response.partial_success.rejected_spans == 0, response.partial_success.error_message
                self.acked |= item.keys
                self.requests_acked += 1
                time.sleep(item.think)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            self.error = exc
        finally:
            self.done = True
            close()

    def _export_until_acknowledged(
        self, export: Any, number: int, item: Planned, rng: random.Random, deadline: float
    ) -> ExportTraceServiceResponse:
        """One request, the same bytes each time, retried as an OTLP exporter retries it."""
        give_up = min(time.monotonic() + EXPORT_TIMEOUT, deadline)
        odd = attempt = 0
        while True:
            self.in_flight = True
            try:
                response: ExportTraceServiceResponse = export(
                    item.body, timeout=CALL_TIMEOUT, wait_for_ready=False
                )
                return response
            except (grpc.RpcError, OSError, http.client.HTTPException) as exc:
                failure = describe(exc)
                self.failures[failure.kind] += 1
                odd = 0 if failure.retryable else odd + 1
                if odd >= MAX_ODD_ANSWERS:
                    raise AssertionError(
                        f"client {self.index}: request {number} was answered {failure.kind} {odd} times "
                        f"in a row, which no exporter retries: {exc}"
                    ) from exc
                backoff = min(FIRST_BACKOFF_SECONDS * 2**attempt, MAX_BACKOFF_SECONDS)
                wait = failure.server_delay or backoff * rng.uniform(1 - JITTER, 1 + JITTER)
                if time.monotonic() + wait > give_up:
                    raise AssertionError(
                        f"client {self.index}: request {number} not acknowledged within its timeout "
                        f"after {attempt + 1} tries (failures so far: {dict(self.failures)})"
                    ) from exc
                time.sleep(wait)
                attempt += 1
            finally:
                self.in_flight = False


@dataclass(frozen=True)
class Failure:
    kind: str  # the gRPC code, the HTTP status or the exception's type, for the summary
    retryable: bool
    server_delay: float | None  # what the server asked for (RetryInfo, Retry-After)


def describe(exc: BaseException) -> Failure:
    """A failed export as the OTLP exporters classify it."""
    if isinstance(exc, grpc.Call):
        code = exc.code()
        delay = None
        info = dict(exc.trailing_metadata() or ()).get("google.rpc.retryinfo-bin")
        if isinstance(info, bytes):
            delay = RetryInfo.FromString(info).retry_delay.ToTimedelta().total_seconds()
        return Failure(code.name, code in RETRYABLE_CODES, delay)
    if isinstance(exc, HttpStatusError):
        return Failure(f"HTTP {exc.status}", exc.status in RETRYABLE_STATUSES, exc.retry_after)
    # Refused, reset or closed connections: the HTTP exporters retry these; gRPC reports them UNAVAILABLE.
    return Failure(type(exc).__name__, True, None)


class HttpStatusError(http.client.HTTPException):
    """An OTLP/HTTP answer other than 200."""

    def __init__(self, status: int, body: bytes, retry_after: float | None) -> None:
        super().__init__(f"HTTP {status}: {body[:200]!r}")
        self.status = status
        self.retry_after = retry_after


def http_export(url: str) -> tuple[Any, Any]:
    """An export function over OTLP/HTTP (a new connection after any failure), and its closer."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    conn: list[http.client.HTTPConnection] = []

    def export(body: bytes, timeout: float, wait_for_ready: bool) -> ExportTraceServiceResponse:
        if not conn:
            conn.append(http.client.HTTPConnection(host, int(port), timeout=timeout))
        try:
            conn[0].request(
                "POST", "/v1/traces", body=body, headers={"Content-Type": "application/x-protobuf"}
            )
            response = conn[0].getresponse()
            data = response.read()
        except BaseException:
            conn.pop().close()
            raise
        if response.status != 200:
            retry_after = response.getheader("Retry-After")
            delay = float(retry_after) if retry_after and retry_after.isdigit() else None
            raise HttpStatusError(response.status, data, delay)
        return ExportTraceServiceResponse.FromString(data)

    return export, lambda: conn and conn.pop().close()


class Server:
    """`user-metrics serve` on one file: start, SIGKILL, restart on the same address, SIGTERM."""

    def __init__(self, db: Path) -> None:
        self.db = db
        self.proc: subprocess.Popen[str] | None = None
        self.address = ""
        self.http_url = ""
        self.starts = 0
        self.start_retries: list[str] = []
        self._drain: threading.Thread | None = None
        self.log: list[str] = []

    def start(self) -> None:
        extra = ()
        if self.address:
            extra = (
                "--grpc-listen",
                self.address,
                "--http-listen",
                self.http_url.removeprefix("http://"),
            )
        give_up = time.monotonic() + START_TIMEOUT
        while True:
            try:
                proc, (address, http_url, _) = start_server_listening(self.db, *extra)
                break
            except AssertionError as exc:
                # Only a transient failure to bind the port again is retried; anything else is a bug.
                if "cannot listen on" not in str(exc) or time.monotonic() > give_up:
                    raise
                self.start_retries.append(str(exc).strip().splitlines()[-1])
                time.sleep(0.2)
        assert not self.address or (address, http_url) == (self.address, self.http_url)
        self.proc, self.address, self.http_url = proc, address, http_url
        self.starts += 1
        # Keep reading stderr so a chatty server can never block on a full pipe.
        self.log = []
        self._drain = threading.Thread(target=self._read_stderr, args=(proc, self.log), daemon=True)
        self._drain.start()

    @staticmethod
    def _read_stderr(proc: subprocess.Popen[str], sink: list[str]) -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            sink.append(line)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        assert self.proc.wait(timeout=10) == -signal.SIGKILL
        self._join()

    def terminate(self) -> tuple[int, str]:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=60)
        self._join()
        return code, "".join(self.log)

    def cleanup(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._join()

    def _join(self) -> None:
        if self._drain is not None:
            self._drain.join(timeout=10)
            self._drain = None
        if self.proc is not None and self.proc.stderr is not None:
            self.proc.stderr.close()


def fetch(con: duckdb.DuckDBPyConnection, sql: str) -> list[tuple[Any, ...]]:
    return con.execute(sql).fetchall()


# What each rollup must add up to, computed from `requests`: (rollup column, the same over request rows).
METRIC_CHECKS = (
    ("sum(requests)", "count(*)"),
    ("sum(errors)", "count(*) FILTER (status = 'error')"),
    ("sum(input_tokens)", "sum(input_tokens)"),
    ("sum(output_tokens)", "sum(output_tokens)"),
    ("sum(cost_usd)", "coalesce(sum(cost_usd), 0)"),
    ("sum(priced_requests)", "count(cost_usd)"),
    ("sum(duration_count)", "count(duration_ms)"),
)
ROLLUP_COLUMNS = ", ".join(f"{r}::HUGEINT" if "cost" not in r else r for r, _ in METRIC_CHECKS)
REQUEST_COLUMNS = ", ".join(f"{q}::HUGEINT" if "cost" not in q else q for _, q in METRIC_CHECKS)


def check_rollups(db: Path) -> dict[str, int]:
    """The rollups add up to exactly the stored rows: in total, per user, and per (UTC day, user)."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        (n_requests, n_distinct) = fetch(
            con, "SELECT count(*), count(DISTINCT (trace_id, span_id)) FROM requests"
        )[0]
        assert n_requests == n_distinct, "a (trace_id, span_id) is stored more than once"
        assert fetch(con, "SELECT count(*) FROM span_keys")[0][0] == n_requests

        totals = fetch(con, f"SELECT {REQUEST_COLUMNS} FROM requests")[0]
        assert totals[0] == n_requests
        for table in ("rollup_user_day", "rollup_user_hour", "rollup_hour", "user_totals", "dims_totals"):
            assert fetch(con, f"SELECT {ROLLUP_COLUMNS} FROM {table}")[0] == totals, table
        with_duration = totals[-1]
        for table in ("rollup_latency_day", "dims_durations"):
            assert fetch(con, f"SELECT sum(n)::HUGEINT FROM {table}")[0][0] == with_duration, table

        (users, distinct_users) = fetch(con, "SELECT count(*), count(DISTINCT user_id) FROM users")[0]
        assert users == distinct_users + 1  # + key 0, "no user id"
        by_user = {
            row[0]: row[1:]
            for row in fetch(con, f"SELECT user_id, {REQUEST_COLUMNS} FROM requests GROUP BY 1")
        }
        for table in ("rollup_user_day", "rollup_user_hour", "user_totals"):
            rolled = {
                row[0]: row[1:]
                for row in fetch(
                    con,
                    f"SELECT u.user_id, {ROLLUP_COLUMNS} FROM {table} JOIN users AS u USING (user_key) GROUP BY 1",
                )
            }
            assert rolled == by_user, table

        by_day_user = {
            row[:2]: row[2:]
            for row in fetch(
                con,
                f"SELECT (epoch_us(start_time) // 86400000000)::INTEGER, user_id, {REQUEST_COLUMNS} "
                "FROM requests GROUP BY 1, 2",
            )
        }
        rolled_days = {
            row[:2]: row[2:]
            for row in fetch(
                con,
                f"SELECT day, u.user_id, {ROLLUP_COLUMNS} FROM rollup_user_day "
                "JOIN users AS u USING (user_key) GROUP BY 1, 2",
            )
        }
        assert rolled_days == by_day_user
        cost = totals[4]
        assert isinstance(cost, Decimal) and cost > 0  # priced models were sent
        return {"rows": n_requests, "users": len(by_user), "day_user_cells": len(by_day_user)}
    finally:
        con.close()


@pytest.mark.slow
def test_sigkill_at_random_moments_loses_nothing_and_counts_retries_once(tmp_path: Path) -> None:
    """Acknowledged spans survive SIGKILL, restarts need no manual step, retries are not double-counted."""
    expected: dict[Key, Expected] = {}
    plans = [build_plan(i, expected) for i in range(CLIENTS)]
    sent = set(expected)
    resends = sum(item.resend for plan in plans for item in plan)
    assert resends >= CLIENTS * 3  # the plan itself holds exporter duplicates

    schedule = random.Random(f"{SEED}-kills")
    kill_delays = [schedule.uniform(*KILL_DELAY_SECONDS) for _ in range(schedule.choice((3, 4)))]

    db = tmp_path / "crash.duckdb"
    server = Server(db)
    started = time.monotonic()
    try:
        server.start()
        # The last client speaks OTLP/HTTP, the others gRPC.
        targets = [server.address] * (CLIENTS - 1) + [server.http_url]
        clients = [
            Client(i, target, plan) for i, (target, plan) in enumerate(zip(targets, plans, strict=True))
        ]
        deadline = time.monotonic() + CLIENT_DEADLINE
        threads = [
            threading.Thread(target=c.run, args=(deadline,), name=f"client-{c.index}") for c in clients
        ]
        for t in threads:
            t.start()

        kills: list[dict[str, int]] = []
        for delay in kill_delays:
            time.sleep(delay)  # the server has been up for `delay` seconds
            if all(c.done for c in clients):
                break
            kills.append(
                {
                    "acked_requests": sum(c.requests_acked for c in clients),
                    "in_flight": sum(c.in_flight for c in clients),
                }
            )
            server.kill()
            server.start()  # straight away, same file, same address: no recovery step

        for t in threads:
            t.join(timeout=max(1.0, deadline - time.monotonic() + 10))
        assert not any(t.is_alive() for t in threads), "a client is stuck"
        for c in clients:
            if c.error is not None:
                raise c.error
        code, log = server.terminate()
    finally:
        server.cleanup()
    elapsed = time.monotonic() - started

    failures = sum((c.failures for c in clients), Counter())
    acked = set().union(*(c.acked for c in clients))
    total_requests = sum(len(p) for p in plans)
    print(
        f"\ncrash test: {len(kills)} SIGKILLs at {[round(d, 2) for d in kill_delays]} s of up-time "
        f"(acked requests at each kill {[k['acked_requests'] for k in kills]}, "
        f"calls in flight {[k['in_flight'] for k in kills]}), {server.starts} starts, "
        f"{len(server.start_retries)} start retries; {total_requests} requests ({resends} deliberate "
        f"re-sends), {sum(failures.values())} failed calls retried {dict(failures)}; {len(sent)} spans; "
        f"{elapsed:.1f} s"
    )

    assert code == 0, log
    # The server really died mid-stream, every time, and clients really had to retry.
    assert len(kills) == len(kill_delays), f"the clients finished before kill {len(kills) + 1}"
    assert all(k["acked_requests"] < total_requests for k in kills)
    assert sum(failures.values()) > 0, "no client ever saw the crash"
    assert all(c.requests_acked == len(c.plan) for c in clients)

    rows = read_requests(db)
    stored = Counter((r["trace_id"], r["span_id"]) for r in rows)
    duplicates = {k: n for k, n in stored.items() if n > 1}
    assert not duplicates, f"{len(duplicates)} spans stored more than once, e.g. {next(iter(duplicates))}"
    assert acked - stored.keys() == set(), f"{len(acked - stored.keys())} acknowledged spans lost"
    assert stored.keys() - sent == set(), "stored spans that were never sent"
    assert acked == sent  # every client got every request acknowledged in the end...
    assert stored.keys() == sent  # ...so exactly what was sent is stored
    for r in rows:
        want = expected[(r["trace_id"], r["span_id"])]
        got = Expected(r["user_id"], r["request_model"], r["input_tokens"], r["output_tokens"], r["status"])
        assert got == want

    summary = check_rollups(db)
    assert summary["rows"] == len(sent)
    assert summary["users"] == len(USERS)
