"""span_facts and span_links, the attribution memory, stay bounded: purged by age and as small as
records are."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from conftest import Service
from otlp import request, span
from senders import raw_export

from user_metrics.store import writer as store


def facts(svc: Service) -> list[tuple[str, dict[str, str]]]:
    assert svc.app is not None
    with svc.app.store.reader() as con:
        rows = con.execute(
            "SELECT span_id, properties FROM span_facts UNION ALL "
            "SELECT printf('%016x', span), NULL FROM span_links ORDER BY 1"
        ).fetchall()
    return [(span_id, dict(props or {})) for span_id, props in rows]


def test_facts_are_purged_by_age_even_when_no_span_waits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Spans that are not LLM calls leave facts; nothing waits for attribution; once older than
    twice the attribution window they are dropped all the same."""
    monkeypatch.setattr(store, "PURGE_EVERY_S", 0.2)
    svc = Service(tmp_path / "um.duckdb", attribution_window_seconds=0.5)
    svc.start()
    try:
        raw_export(
            svc.target,
            request([span({"http.route": "/"}, name="GET /") for _ in range(5)]).SerializeToString(),
        )
        assert len(facts(svc)) == 5
        deadline = time.monotonic() + 30
        while facts(svc) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert facts(svc) == []
    finally:
        svc.stop()


def test_facts_keep_at_most_max_properties(tmp_path: Path) -> None:
    """A span's fact keeps the first max_properties properties by name, as a record would."""
    svc = Service(tmp_path / "um.duckdb", max_properties=2)
    svc.start()
    try:
        props = {f"property.{name}": name for name in ("d", "a", "c", "b")}
        raw_export(svc.target, request([span(props, name="handler")]).SerializeToString())
        ((_, kept),) = facts(svc)
        assert kept == {"a": "a", "b": "b"}
        assert svc.app is not None and svc.app.stats.limit_cuts["max_properties"] == 2
    finally:
        svc.stop()
