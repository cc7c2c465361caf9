"""The periodic info line: what the service took in, logged while spans arrive, silent when idle."""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path

import pytest
from otlp import chat, request, span
from senders import raw_export

from user_metrics.app import App
from user_metrics.serve.activity import ActivityLog
from user_metrics.settings import Settings
from user_metrics.stats import Stats

LINE = re.compile(
    r"last [\d.]+ s: (\d+) spans received, (\d+) requests stored, (\d+) duplicates ignored, "
    r"(\d+) rejected, (\d+) not LLM calls; (\S+) users in the database"
)


def lines(caplog: pytest.LogCaptureFixture) -> list[tuple[int, ...]]:
    """The activity lines logged so far, as (received, stored, duplicates, rejected, skipped, users)."""
    found = []
    for record in caplog.records:
        match = LINE.fullmatch(record.getMessage())
        if match and record.levelno == logging.INFO:
            found.append(tuple(int(g) if g.isdigit() else -1 for g in match.groups()))
    return found


class TestActivityLog:
    def test_a_line_counts_what_arrived_since_the_last(self, caplog: pytest.LogCaptureFixture) -> None:
        """Each line holds the differences since the previous one; no spans, no line."""
        caplog.set_level(logging.INFO, logger="user_metrics")
        stats = Stats()
        stats.add(spans_received=3, spans_stored=3)  # before the log exists: not reported
        activity = ActivityLog(stats, users=lambda: 7, interval=60)
        activity.log_once()
        assert lines(caplog) == []
        stats.add(spans_received=10, spans_stored=6, spans_duplicate=2, spans_skipped=1)
        stats.reject("invalid_span", 1)
        activity.log_once()
        activity.log_once()
        assert lines(caplog) == [(10, 6, 2, 1, 1, 7)]
        assert caplog.records[-1].getMessage().startswith("last 60 s: ")

    def test_a_failing_user_count_still_logs_the_line(self, caplog: pytest.LogCaptureFixture) -> None:
        """The users figure is a read of the store; if it fails, the line says "?" instead."""
        caplog.set_level(logging.INFO, logger="user_metrics")
        stats = Stats()

        def broken() -> int:
            raise RuntimeError("the store is shutting down")

        activity = ActivityLog(stats, users=broken)
        stats.add(spans_received=1)
        activity.log_once()
        assert lines(caplog) == [(1, 0, 0, 0, 0, -1)]


def test_the_service_logs_while_spans_arrive_and_not_when_idle(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A real App: the lines add up to what was sent over gRPC, then stop once nothing arrives."""
    caplog.set_level(logging.INFO, logger="user_metrics")
    settings = Settings(
        db=str(tmp_path / "um.duckdb"),
        grpc_listen="127.0.0.1:0",
        http_listen="127.0.0.1:0",
        api_listen="127.0.0.1:0",
    )
    interval = 0.2
    app = App(settings, activity_interval=interval)
    app.start()
    try:
        first = span(chat(user="ada"))
        raw_export(app.grpc_address, request([first, span(chat(user="bob"))]).SerializeToString())
        raw_export(app.grpc_address, request([first]).SerializeToString())  # an exporter's re-send
        raw_export(
            app.grpc_address,
            request([span(chat(user="cy", inp=-5)), span({"http.route": "/search"})]).SerializeToString(),
        )
        deadline = time.monotonic() + 30
        want = (5, 2, 1, 1, 1)
        while tuple(map(sum, zip(*lines(caplog), strict=True)))[:5] != want:
            assert time.monotonic() < deadline, f"lines so far: {lines(caplog)}"
            time.sleep(interval / 4)
        assert lines(caplog)[-1][5] == 2, "ada and bob"
        logged = len(lines(caplog))
        time.sleep(5 * interval)
        assert len(lines(caplog)) == logged, "an idle service logs no activity line"
    finally:
        app.stop()
