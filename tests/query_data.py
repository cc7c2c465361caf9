"""A known set of LLM spans and the truth about them, for the query-layer tests.

Expected aggregates are computed here in plain Python from the same list the tests send, never
by running the service's SQL.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from otlp import request, span

# Midnight UTC that starts the data; the spans cover four days from here.
DAY0 = datetime(2026, 11, 10, tzinfo=UTC)
USERS = [
    "alice",
    "bob",
    "o'brien",
    'say "hi"',
    "zoë 🙂",
    "with space",
    "x'); DROP TABLE requests; --",
    "a/b?c=d&e#f",
]
PLANS = {u: ("free", "pro", "enterprise")[i % 3] for i, u in enumerate(USERS)}
MODELS = [("openai", "gpt-4o-mini"), ("anthropic", "claude-sonnet-4-5"), ("openai", "mystery-model-x")]
UNPRICED = "mystery-model-x"  # unknown to genai-prices and carries no cost: unpriced
SERVICES = ["chat-api", "batch-worker"]


@dataclass(frozen=True)
class Truth:
    user: str | None
    provider: str
    model: str
    service: str
    environment: str
    plan: str | None
    start: datetime
    duration_ms: float
    input_tokens: int
    output_tokens: int
    error: bool
    cost: Decimal | None


def _ns(t: datetime) -> int:
    return int((t - datetime(1970, 1, 1, tzinfo=UTC)) / timedelta(microseconds=1)) * 1000


def build(seed: int = 7, count: int = 400) -> list[Truth]:
    """Spans over four days, some exactly on UTC midnights and just before them."""
    rng = random.Random(seed)
    truths = []
    for i in range(count):
        if i < 8:  # on the day edges: the last microsecond of a day and the first of the next
            start = DAY0 + timedelta(days=1 + i % 3) - (timedelta(microseconds=1) if i % 2 else timedelta(0))
        else:
            start = DAY0 + timedelta(seconds=rng.randrange(4 * 86400), microseconds=rng.randrange(10**6))
        user = None if i % 17 == 0 else rng.choice(USERS[:4] * 3 + USERS[4:])
        provider, model = rng.choice(MODELS)
        inp, out = rng.randrange(1, 5000), rng.randrange(1, 800)
        cost = None if model == UNPRICED else Decimal(rng.randrange(1, 10**7)) / Decimal(10**9)
        truths.append(
            Truth(
                user=user,
                provider=provider,
                model=model,
                service=SERVICES[i % 2],
                environment="prod" if i % 5 else "staging",
                plan=PLANS[user] if user is not None and i % 11 else None,
                start=start,
                duration_ms=float(rng.choice([12, 80, 250, 900, 4000]) + rng.randrange(100)),
                input_tokens=inp,
                output_tokens=out,
                error=rng.random() < 0.1,
                cost=cost,
            )
        )
    return truths


def requests_for(truths: Iterable[Truth], per_request: int = 50) -> list[ExportTraceServiceRequest]:
    """Export requests, one resource per (service, environment) as an SDK would send them."""
    groups: dict[tuple[str, str], list[Any]] = defaultdict(list)
    for t in truths:
        attrs: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": t.provider,
            "gen_ai.request.model": t.model,
            "gen_ai.response.model": t.model,
            "gen_ai.usage.input_tokens": t.input_tokens,
            "gen_ai.usage.output_tokens": t.output_tokens,
        }
        if t.user is not None:
            attrs["user.id"] = t.user
        if t.plan is not None:
            attrs["property.plan"] = t.plan
        if t.cost is not None:
            attrs["gen_ai.usage.cost"] = str(t.cost)
        groups[(t.service, t.environment)].append(
            span(attrs, start=_ns(t.start), duration_ns=int(t.duration_ms * 1e6), error=t.error)
        )
    out = []
    for (service, env), spans in groups.items():
        for i in range(0, len(spans), per_request):
            out.append(
                request(
                    spans[i : i + per_request], {"service.name": service, "deployment.environment.name": env}
                )
            )
    return out


def in_window(truths: Iterable[Truth], since: datetime, until: datetime, **filters: Any) -> list[Truth]:
    """The truths a query over [since, until) with these filters must count."""
    out = []
    for t in truths:
        if not since <= t.start < until:
            continue
        if "plan" in filters and t.plan != filters["plan"]:
            continue
        if "model" in filters and t.model != filters["model"]:
            continue
        if "service" in filters and t.service != filters["service"]:
            continue
        if "environment" in filters and t.environment != filters["environment"]:
            continue
        out.append(t)
    return out


def per_user(truths: Iterable[Truth]) -> dict[str | None, dict[str, Any]]:
    """Each user's expected fields (the exact ones) from the truths."""
    users: dict[str | None, dict[str, Any]] = {}
    for t in truths:
        u = users.setdefault(
            t.user,
            {
                "requests": 0,
                "errors": 0,
                "input_tokens": 0,
                "output_tokens": 0,
                "cost_usd": None,
                "unpriced_requests": 0,
                "days": set(),
                "first": t.start,
                "last": t.start,
                "durations": [],
                "models": defaultdict(int),
            },
        )
        u["requests"] += 1
        u["errors"] += t.error
        u["input_tokens"] += t.input_tokens
        u["output_tokens"] += t.output_tokens
        if t.cost is not None:
            u["cost_usd"] = (u["cost_usd"] or Decimal(0)) + t.cost
        else:
            u["unpriced_requests"] += 1
        u["days"].add(t.start.date())
        u["first"] = min(u["first"], t.start)
        u["last"] = max(u["last"], t.start)
        u["durations"].append(t.duration_ms)
        u["models"][(t.provider, t.model)] += 1
    return users
