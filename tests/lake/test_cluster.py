"""Scale-out end to end: three receivers writing one lake, a fourth reader-only process, real OTel
SDK exporters routed by trace id, and the failures a cluster meets, with exact per-user totals.

Everything is real: a PostgreSQL server (``tests/pg.py``), four ``user-metrics serve`` processes
(three receivers in lake mode, each with its own local file, and one with ingest off), and the
OTel SDK's gRPC span exporter, which retries what the receivers answer as retryable. Three
"applications" (a TracerProvider each, with a BatchSpanProcessor) make LLM traces concurrently; a
span exporter of this module routes every span by ``trace_id % 3``, the Collector's
``loadbalancing`` exporter in miniature, and re-sends a batch the SDK gave up on until it is
acknowledged (the Collector's queue), so every span made is acknowledged in the end.

Meanwhile, each step waiting for a condition, not a time:
- one receiver is SIGKILLed and started again on the same ports and the same file;
- every third batch of single-span traces is also sent to the next receiver (a load balancer whose
  backend set changed): both acknowledge it, the lake must hold it once;
- PostgreSQL is stopped until the receivers, whose ``lake_max_lag`` is short, refuse exports with
  a retryable error, then started again.

Afterwards, once the reader sees every row: each user's requests, tokens by type, errors, cost and
unpriced requests from the reader's HTTP API equal the figures computed here from what the
exporters were acknowledged for; a SQL count over ``requests`` equals the number of LLM spans, and
no (trace_id, span_id) appears twice; each receiver shipped rows, the lake turned some away as
duplicates, and the receivers counted exports refused for the lake's lag.
"""

from __future__ import annotations

import logging
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from conftest import counter_total, spawn
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind, Status, StatusCode, set_span_in_context
from pg import LakeCatalog
from servers import call

APPS = 3
PACE_S = 0.04  # an application makes a trace (1.6 spans on average) every 40 ms, until told to stop
MAX_TRACES_PER_APP = 1000  # a bound; a run makes ~400 LLM calls (~600 spans; 30 sent twice)
STEP_SPANS = 80  # spans acknowledged between two steps of the run
USERS = [f"user-{i:02d}" for i in range(12)]
MODELS = ("gpt-4o-mini", "gpt-4o", "claude-sonnet-4")
UNPRICED_MODEL = "no-such-model-xyz"  # no reported cost and no price: an unpriced request
AHEAD = 60  # spans an application may have made and not yet had acknowledged (it waits beyond)
DUPLICATE_EVERY = 3  # every third batch of single-span traces also goes to the next receiver
SHIP_INTERVAL_S = "0.2"
MAX_LAG_S = "1.5"  # short, so that a PostgreSQL restart soon turns into refused exports
# Liveness bounds only (a loaded 2-core machine): no assertion depends on how fast anything is.
START_TIMEOUT_S = 120.0
DELIVERY_TIMEOUT_S = 300.0
VISIBLE_TIMEOUT_S = 180.0
# Reconnect quickly after a receiver restarts (gRPC's default backoff starts at 1 s, grows to 2 min).
CHANNEL_OPTIONS = (
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 500),
)
EXPORTER_LOG = "opentelemetry.exporter.otlp.proto.grpc.exporter"
LAG_REFUSAL = re.compile(r"lake", re.IGNORECASE)  # in the details of the receiver's refusal
LISTENING = re.compile(r"OTLP gRPC and queries on (\S+); OTLP/HTTP on (\S+); HTTP API on (\S+);")
API_ON = re.compile(r"HTTP API on (http://\S+?)[;,\s]")


def wait_for(
    what: str, condition: Callable[[], Any], timeout: float = VISIBLE_TIMEOUT_S, alive: Sequence[Node] = ()
) -> Any:
    """Poll ``condition`` until it returns something true; fail after a generous deadline, or at
    once when a node of ``alive`` has ended (a crash would otherwise be waited out)."""
    deadline = time.monotonic() + timeout
    while True:
        for node in alive:
            node.check_alive()
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout:.0f} s for {what}")
        time.sleep(0.1)


@dataclass
class Node:
    """One ``user-metrics serve`` process; its stderr goes to a file (read for the addresses)."""

    name: str
    args: list[str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    grpc: str = ""
    api: str = ""
    offset: int = 0  # where this run's lines start in the log

    def start(self) -> None:
        self.offset = self.log.stat().st_size if self.log.exists() else 0
        with open(self.log, "ab") as err:
            self.proc = spawn(
                [sys.executable, "-m", "user_metrics", "serve", *self.args],
                stdout=subprocess.DEVNULL,
                stderr=err,
                env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
            )

    def wait_listening(self) -> None:
        """Read the addresses from the listening line it writes once it serves."""
        assert self.proc is not None

        def listening() -> bool:
            self.check_alive()
            with open(self.log, "rb") as log:
                log.seek(self.offset)
                text = log.read().decode(errors="replace")
            receiver = LISTENING.search(text)
            if receiver:
                self.grpc, self.api = receiver.group(1), receiver.group(3)
                return True
            reader = API_ON.search(text)
            if reader and "--no-ingest" in self.args:
                self.api = reader.group(1)
                return True
            return False

        wait_for(f"{self.name} to listen", listening, START_TIMEOUT_S)

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(
                f"{self.name} ended ({self.proc.returncode}): {self.log.read_text()[-3000:]}"
            )

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=60)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=60)


def receiver(name: str, tmp: Path, lake: LakeCatalog) -> Node:
    return Node(
        name,
        [
            "--db", str(tmp / f"{name}.duckdb"),
            "--lake", lake.catalog, "--lake-data", lake.data_path,
            "--lake-ship-interval", SHIP_INTERVAL_S, "--lake-max-lag", MAX_LAG_S,
            "--grpc-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--api-listen", "127.0.0.1:0",
        ],
        tmp / f"{name}.log",
    )  # fmt: skip


def same_ports(node: Node) -> None:
    """From now on the node starts on the ports it has (a restart keeps its address)."""
    http = next(i for i, a in enumerate(node.args) if a == "--http-listen")
    node.args[node.args.index("--grpc-listen") + 1] = node.grpc
    node.args[node.args.index("--api-listen") + 1] = node.api.removeprefix("http://")
    # The OTLP/HTTP port is not used here: a free one each time is fine.
    node.args[http + 1] = "127.0.0.1:0"


class Refusals(logging.Handler):
    """Counts the SDK exporter's retries of an UNAVAILABLE answer that names the lake (a receiver
    refusing exports while its oldest unshipped row is older than lake_max_lag), from its
    "Transient error ... Error details: ..." warnings."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self._count = 0
        self._lock = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "Transient error" in message and "UNAVAILABLE" in message and LAG_REFUSAL.search(message):
            with self._lock:
                self._count += 1

    def count(self) -> int:
        with self._lock:
            return self._count


@dataclass
class Acknowledged:
    """What the receivers acknowledged, as the exporters saw it (shared by every application)."""

    spans: list[ReadableSpan] = field(default_factory=list)
    duplicated: int = 0
    failures: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    abandoned: threading.Event = field(default_factory=threading.Event)  # the test failed: stop retrying

    def count(self) -> int:
        with self.lock:
            return len(self.spans)


class TraceIdRouter(SpanExporter):
    """The Collector's ``loadbalancing`` exporter in miniature: each span goes to receiver
    ``trace_id % 3`` through the SDK's own (retrying) OTLP gRPC exporter; a batch the SDK gave up
    on is sent again until acknowledged (the Collector's queue). While ``duplicating`` is set,
    every third batch of single-span traces is also sent to the next receiver."""

    def __init__(self, targets: Sequence[str], acknowledged: Acknowledged, duplicating: threading.Event):
        self.exporters = [
            OTLPSpanExporter(endpoint=t, insecure=True, timeout=5, channel_options=CHANNEL_OPTIONS)
            for t in targets
        ]
        self.acknowledged = acknowledged
        self.duplicating = duplicating
        self.batches = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        groups: dict[int, list[ReadableSpan]] = defaultdict(list)
        for span in spans:
            assert span.context is not None
            groups[span.context.trace_id % len(self.exporters)].append(span)
        for index, group in sorted(groups.items()):
            self._deliver(index, group)
            alone = [s for s in group if s.parent is None and s.name.startswith("chat ")]
            if alone and self.duplicating.is_set():
                self.batches += 1
                if self.batches % DUPLICATE_EVERY == 0:
                    self._deliver((index + 1) % len(self.exporters), alone)
                    with self.acknowledged.lock:
                        self.acknowledged.duplicated += len(alone)
        return SpanExportResult.SUCCESS

    def _deliver(self, index: int, group: list[ReadableSpan]) -> None:
        deadline = time.monotonic() + DELIVERY_TIMEOUT_S
        while self.exporters[index].export(group) is not SpanExportResult.SUCCESS:
            if time.monotonic() > deadline or self.acknowledged.abandoned.is_set():
                with self.acknowledged.lock:
                    self.acknowledged.failures.append(
                        f"receiver {index}: {len(group)} spans never acknowledged"
                    )
                return
            time.sleep(0.2)
        with self.acknowledged.lock:
            if index == group[0].context.trace_id % len(self.exporters):  # type: ignore[union-attr]
                self.acknowledged.spans.extend(group)

    def shutdown(self) -> None:
        for exporter in self.exporters:
            exporter.shutdown()


@dataclass(frozen=True)
class Call:
    """One LLM call as made: who it belongs to and what it must count."""

    user: str
    model: str
    inp: int
    out: int
    cached: int
    reasoning: int
    error: bool
    cost: Decimal | None


def application(
    app: int,
    targets: Sequence[str],
    acknowledged: Acknowledged,
    duplicating: threading.Event,
    done: threading.Event,
) -> dict[tuple[int, int], Call]:
    """Make traces until ``done`` (or MAX_TRACES_PER_APP), a trace every PACE_S, never more than
    AHEAD spans ahead of the acknowledgements; the LLM calls made, by (trace id, span id)."""
    rng = random.Random(1000 + app)
    router = TraceIdRouter(targets, acknowledged, duplicating)
    provider = TracerProvider(resource=Resource.create({"service.name": f"app-{app}"}))
    provider.add_span_processor(
        BatchSpanProcessor(
            router, max_queue_size=100_000, schedule_delay_millis=100, max_export_batch_size=40
        )
    )
    tracer = provider.get_tracer("tests.lake.cluster")
    calls: dict[tuple[int, int], Call] = {}
    made = 0
    while not done.is_set() and len(calls) < MAX_TRACES_PER_APP:
        time.sleep(PACE_S)
        while made - acknowledged.count() / APPS > AHEAD and not done.is_set():
            time.sleep(0.02)
        user = rng.choice(USERS)
        model = rng.choice(MODELS) if rng.random() < 0.9 else UNPRICED_MODEL
        inp, out = rng.randint(10, 4000), rng.randint(1, 1500)
        cached, reasoning = rng.randint(0, inp), rng.randint(0, out) if rng.random() < 0.3 else 0
        cost = None if model == UNPRICED_MODEL else Decimal(rng.randint(1, 999_999)) / 10**6
        error = rng.random() < 0.1
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": model,
            "gen_ai.usage.input_tokens": inp,
            "gen_ai.usage.output_tokens": out,
            "gen_ai.usage.cache_read.input_tokens": cached,
            "gen_ai.usage.reasoning.output_tokens": reasoning,
        }
        if cost is not None:
            attributes["llm.cost.total"] = float(cost)  # a reported cost: exact ground truth
        status = Status(StatusCode.ERROR, "rate limited") if error else Status(StatusCode.UNSET)
        if rng.random() < 0.6:
            # A request span with the user and plan; its LLM child inherits them (attribution on
            # the receiver of the trace, the child arriving first).
            parent = tracer.start_span("handle_request", attributes={"user.id": user, "property.plan": "pro"})
            child = tracer.start_span(
                f"chat {model}",
                context=set_span_in_context(parent),
                kind=SpanKind.CLIENT,
                attributes=attributes,
            )
            child.set_status(status)
            child.end()
            parent.end()
            made += 2
            llm = child
        else:
            attributes.update({"user.id": user, "session.id": f"{user}-s{rng.randint(0, 3)}"})
            llm = tracer.start_span(f"chat {model}", kind=SpanKind.CLIENT, attributes=attributes)
            llm.set_status(status)
            llm.end()
            made += 1
        context = llm.get_span_context()
        calls[(context.trace_id, context.span_id)] = Call(
            user, model, inp, out, cached, reasoning, error, cost
        )
    assert provider.force_flush(int(DELIVERY_TIMEOUT_S * 1000))
    provider.shutdown()
    return calls


def expected_users(calls: dict[tuple[int, int], Call]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for c in calls.values():
        u = out.setdefault(
            c.user,
            {
                "requests": 0, "errors": 0, "input_tokens": 0, "output_tokens": 0,
                "cache_read_tokens": 0, "reasoning_tokens": 0, "cost_usd": Decimal(0), "unpriced_requests": 0,
            },
        )  # fmt: skip
        u["requests"] += 1
        u["errors"] += c.error
        u["input_tokens"] += c.inp
        u["output_tokens"] += c.out
        u["cache_read_tokens"] += c.cached
        u["reasoning_tokens"] += c.reasoning
        if c.cost is None:
            u["unpriced_requests"] += 1
        else:
            u["cost_usd"] += c.cost
    return out


FIELDS = (
    "requests", "errors", "input_tokens", "output_tokens", "cache_read_tokens", "reasoning_tokens", "cost_usd",
    "unpriced_requests",
)  # fmt: skip


def sql(api: str, text: str) -> list[list[Any]]:
    status, body, _ = call(api, "POST", "/api/v1/sql", {"sql": text})
    assert status == 200, body
    return list(body["rows"])


def lake_rows(api: str) -> int:
    """The rows of ``requests`` the reader sees (0 while the lake is not readable)."""
    status, body, _ = call(api, "POST", "/api/v1/sql", {"sql": "SELECT count(*) FROM requests"})
    return int(body["rows"][0][0]) if status == 200 else 0


@pytest.mark.slow
def test_three_receivers_one_lake_exact_totals_through_kill_duplicates_and_catalog_restart(
    lake_catalog: LakeCatalog, tmp_path: Path
) -> None:
    receivers = [receiver(f"receiver-{i}", tmp_path, lake_catalog) for i in range(3)]
    reader = Node(
        "reader",
        ["--no-ingest", "--lake", lake_catalog.catalog, "--lake-data", lake_catalog.data_path,
         "--grpc-listen", "127.0.0.1:0", "--api-listen", "127.0.0.1:0"],
        tmp_path / "reader.log",
    )  # fmt: skip
    refusals = Refusals()
    acknowledged = Acknowledged()
    duplicating, done = threading.Event(), threading.Event()
    logging.getLogger(EXPORTER_LOG).addHandler(refusals)
    try:
        # All four start together on a new lake: one creates its catalog tables, the others wait.
        for node in (*receivers, reader):
            node.start()
        for node in (*receivers, reader):
            node.wait_listening()
        for node in receivers:
            same_ports(node)
        nodes = [*receivers, reader]  # none may end but by the test's SIGKILL
        targets = [node.grpc for node in receivers]

        made: list[dict[tuple[int, int], Call]] = [{} for _ in range(APPS)]
        errors: list[BaseException] = []

        def run(app: int) -> None:
            try:
                made[app] = application(app, targets, acknowledged, duplicating, done)
            except BaseException as exc:  # reported by the main thread
                errors.append(exc)

        def acknowledged_more(than: int) -> int:
            """Wait until STEP_SPANS more than ``than`` are acknowledged; the count then."""
            return wait_for(
                f"{STEP_SPANS} more spans acknowledged",
                lambda: (n := acknowledged.count()) >= than + STEP_SPANS and n,
                DELIVERY_TIMEOUT_S,
                nodes,
            )

        threads = [threading.Thread(target=run, args=(app,), daemon=True) for app in range(APPS)]
        for thread in threads:
            thread.start()

        # 1. A receiver SIGKILLed mid-run, restarted on the same ports and file; exporters retry.
        count = acknowledged_more(0)
        victim = receivers[1]
        victim.kill()
        victim.start()
        victim.wait_listening()
        assert victim.grpc == targets[1]
        count = acknowledged_more(count)

        # 2. Batches sent to two receivers, from here on.
        duplicating.set()
        count = acknowledged_more(count)

        # 3. PostgreSQL stopped until exports are refused (the lag bound passed), then started.
        seen = refusals.count()
        lake_catalog.cluster.stop()
        try:
            wait_for(
                "an export refused while the lake is unreachable",
                lambda: refusals.count() > seen,
                alive=nodes,
            )
        finally:
            lake_catalog.cluster.start()
        acknowledged_more(acknowledged.count())
        done.set()

        wait_for(
            "the applications to flush",
            lambda: not any(t.is_alive() for t in threads),
            DELIVERY_TIMEOUT_S,
            nodes,
        )
        assert not errors, errors
        assert not acknowledged.failures, acknowledged.failures
        assert acknowledged.duplicated > 0

        calls = {key: c for app in made for key, c in app.items()}
        acked = {(s.context.trace_id, s.context.span_id) for s in acknowledged.spans}  # type: ignore[union-attr]
        assert set(calls) <= acked  # every LLM call made was acknowledged by its receiver

        # Every row reaches the reader's view of the lake (shipping continues after the restart).
        wait_for(f"{len(calls)} rows in the lake", lambda: lake_rows(reader.api) >= len(calls), alive=nodes)
        ((rows, distinct),) = sql(
            reader.api, "SELECT count(*), count(DISTINCT (trace_id, span_id)) FROM requests"
        )
        assert (rows, distinct) == (len(calls), len(calls))
        stored = {
            (int(t, 16), int(s, 16)) for t, s in sql(reader.api, "SELECT trace_id, span_id FROM requests")
        }
        assert stored == set(calls)

        expected = expected_users(calls)
        since = (datetime.now(UTC) - timedelta(days=2)).date().isoformat()
        until = (datetime.now(UTC) + timedelta(days=2)).date().isoformat()
        status, page, _ = call(reader.api, "GET", f"/api/v1/users?since={since}&until={until}&limit=1000")
        assert status == 200, page
        got = {u["user_id"]: {name: u[name] for name in FIELDS} for u in page["users"]}
        for figures in got.values():
            figures["cost_usd"] = Decimal(str(figures["cost_usd"]))
        assert got == expected

        # Each receiver shipped rows; the lake turned the spans sent twice away (and re-ships).
        shipped = [counter_total(node.api, "user_metrics_lake_shipped_rows") for node in receivers]
        assert all(n > 0 for n in shipped), shipped
        duplicates = sum(counter_total(node.api, "user_metrics_lake_duplicate_rows") for node in receivers)
        assert duplicates > 0
        # The refusals the exporters retried were the lag bound's, as the receivers count them.
        refused = [counter_total(n.api, "user_metrics_exports_refused", reason="lake_lag") for n in receivers]
        assert sum(refused) > 0, refused
    finally:
        acknowledged.abandoned.set()
        done.set()
        logging.getLogger(EXPORTER_LOG).removeHandler(refusals)
        for node in (*receivers, reader):
            node.stop()
