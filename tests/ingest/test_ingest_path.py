"""Which ingest path runs (span_split.load), that the service says so at start, and the split's refusals."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest
from conftest import INGEST_PATHS, Service

from user_metrics.errors import InvalidInput, SettingsError
from user_metrics.ingest import span_split, split_reference
from user_metrics.ingest.attributes import compile_conventions
from user_metrics.ingest.span_split import load

CONV = compile_conventions()


def test_the_python_path_is_forced_by_the_setting() -> None:
    split = load(CONV, "python")
    assert (split.splits, split.path) == (False, "python")
    assert "ingest_path" in split.reason


def test_an_unknown_ingest_path_stops_the_start(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="ingest_path"):
        Service(tmp_path / "db.duckdb", ingest_path="fast").start()
    assert list(tmp_path.iterdir()) == []  # stopped before the database was created


def test_without_the_native_module_the_python_path_runs_and_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "user_metrics.ingest._otlp_scan", None)  # import fails
    split = load(CONV)
    assert (split.splits, split.path) == (False, "python")
    assert "not built" in split.reason


def test_the_reference_split_can_be_chosen() -> None:
    split = load(CONV, "reference")
    assert (split.splits, split.path) == (True, "reference")


def test_the_table_holds_every_key_the_conventions_read() -> None:
    conv = compile_conventions(["tier"], property_prefixes=["acme."])
    table = span_split.scan_table(conv, split_reference)
    assert {"gen_ai.request.model", "user.id", "tier", "metadata"} <= table.keys
    assert "acme." in table.prefixes and "property." in table.prefixes
    assert table.reads("ai.usage.whatever") and not table.reads("http.route")
    assert "server.address" not in table.keys  # read on LLM records only: no candidate for it


@pytest.mark.parametrize("path", INGEST_PATHS)
def test_the_service_logs_its_ingest_path(
    path: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="user_metrics")
    svc = Service(tmp_path / "db.duckdb", ingest_path="auto" if path == "native" else path)
    svc.start()
    svc.stop()
    said = [r.getMessage() for r in caplog.records if "ingest path" in r.getMessage()]
    assert len(said) == 1 and said[0].startswith(f"ingest path: {path}"), said


@pytest.mark.parametrize("path", INGEST_PATHS)
def test_a_body_that_is_no_request_is_invalid_input_on_each_path(path: str, tmp_path: Path) -> None:
    svc = Service(tmp_path / "db.duckdb", ingest_path="auto" if path == "native" else path)
    app = svc.start()
    try:
        for body in (b"\x0a\x05\x12", b"\xff" * 7, b"\x0a\x03\x12\x01\x80"):
            with pytest.raises(InvalidInput, match="not an OTLP ExportTraceServiceRequest"):
                app.ingestor.export_body(body)
        assert app.ingestor.export_body(b"").rejected_spans == 0
    finally:
        svc.stop()
