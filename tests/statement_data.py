"""Spans for the statement tests: many users and models, priced by genai-prices (cache, reasoning),
reported, unpriced and without usage, around the edges of October 2026 in UTC and Asia/Kolkata."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from conftest import Service
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from otlp import request, span

START = datetime(2026, 10, 1, tzinfo=UTC)
MONTH = "2026-10"
END = datetime(2026, 11, 1, tzinfo=UTC)
EDGE_USER = "edge-user"
KOLKATA = "Asia/Kolkata"  # +05:30: October starts 2026-09-30T18:30Z
USERS = [f"user-{i:02d}" for i in range(30)] + ["zoë 🙂", "o'brien", 'a,b"c']
MODELS = [
    ("openai", "gpt-4o"),
    ("openai", "gpt-4o-mini"),
    ("anthropic", "claude-sonnet-4-5"),
    ("openai", "o3-mini"),
    ("openai", "mystery-model-x"),  # unpriced
]
EDGES = [
    START,
    START - timedelta(microseconds=1),
    START - timedelta(hours=5, minutes=30),
    START - timedelta(hours=5, minutes=30, microseconds=1),
    END,
    END - timedelta(microseconds=1),
    END - timedelta(hours=5, minutes=30),
    END - timedelta(hours=5, minutes=30, microseconds=1),
]


@dataclass(frozen=True)
class Call:
    user: str | None
    provider: str
    model: str
    start: datetime
    inp: int | None
    out: int | None
    cache_read: int
    cache_write: int
    reasoning: int
    reported: str | None


def build(seed: int = 16, count: int = 900) -> list[Call]:
    rng = random.Random(seed)
    calls = []
    for i in range(count):
        if i < len(EDGES) * 3:
            start = EDGES[i % len(EDGES)]
        else:
            start = (
                START
                - timedelta(days=1)
                + timedelta(seconds=rng.randrange(32 * 86400), microseconds=rng.randrange(10**6))
            )
        provider, model = rng.choice(MODELS)
        inp, out = rng.randrange(1, 200_000), rng.randrange(1, 20_000)
        cache_read = rng.randrange(0, inp) if provider == "anthropic" or rng.random() < 0.3 else 0
        cache_write = (
            rng.randrange(0, inp - cache_read) if provider == "anthropic" and rng.random() < 0.5 else 0
        )
        reasoning = rng.randrange(0, out) if model == "o3-mini" else 0
        no_usage = i % 23 == 0
        calls.append(
            Call(
                user=None if i % 19 == 0 else rng.choice(USERS),
                provider=provider,
                model=model,
                start=start,
                inp=None if no_usage else inp,
                out=None if no_usage else out,
                cache_read=0 if no_usage else cache_read,
                cache_write=0 if no_usage else cache_write,
                reasoning=0 if no_usage else reasoning,
                reported=f"0.{rng.randrange(10**9):09d}" if i % 13 == 0 else None,
            )
        )
    for edge in EDGES:  # a user active only on the days at the month's edges
        calls.append(Call(EDGE_USER, "openai", "gpt-4o", edge, 1000, 100, 200, 0, 0, None))
    return calls


def _ns(t: datetime) -> int:
    return int((t - datetime(1970, 1, 1, tzinfo=UTC)) / timedelta(microseconds=1)) * 1000


def requests_for(calls: list[Call], per_request: int = 100) -> list[ExportTraceServiceRequest]:
    spans = []
    for c in calls:
        attrs: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": c.provider,
            "gen_ai.request.model": c.model,
        }
        if c.inp is not None:
            attrs["gen_ai.usage.input_tokens"] = c.inp
            attrs["gen_ai.usage.output_tokens"] = c.out
            attrs["gen_ai.usage.cache_read.input_tokens"] = c.cache_read
            attrs["gen_ai.usage.cache_creation.input_tokens"] = c.cache_write
            attrs["gen_ai.usage.reasoning.output_tokens"] = c.reasoning
        if c.user is not None:
            attrs["user.id"] = c.user
        if c.reported is not None:
            attrs["gen_ai.usage.cost"] = c.reported
        spans.append(span(attrs, start=_ns(c.start)))
    return [request(spans[i : i + per_request]) for i in range(0, len(spans), per_request)]


def serving(db: Path, calls: list[Call]) -> Iterator[Service]:
    """A running service holding ``calls`` (for a module fixture: ``yield from``)."""
    svc = Service(db)
    app = svc.start()
    for req in requests_for(calls):
        result = app.ingestor.export(req)
        assert result.rejected_spans == 0, result.error_message
    yield svc
    svc.stop()
