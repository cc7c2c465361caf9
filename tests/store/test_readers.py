"""Readers of the store see whole commits while the writer works."""

from __future__ import annotations

import time
from pathlib import Path

import duckdb
import pytest
from conftest import Service
from query_data import requests_for
from query_service import END, START, TRUTHS

import user_metrics
from user_metrics.stats import Stats
from user_metrics.store.readers import Readers


class TestReadingWhileWriting:
    def test_readers_see_whole_commits_while_exports_and_compactions_run(self, tmp_path: Path) -> None:
        """Totals read over HTTP during ingest only grow, by whole exports, and end exact."""
        import threading

        svc = Service(tmp_path / "um.duckdb")
        app = svc.start()
        try:
            reqs = requests_for(TRUTHS, per_request=20)
            sizes = {0}
            for i in range(1, len(reqs) + 1):
                sizes.add(
                    sum(len(ss.spans) for r in reqs[:i] for rs in r.resource_spans for ss in rs.scope_spans)
                )
            done = threading.Event()

            def ingest() -> None:
                for req in reqs:
                    app.ingestor.export(req)
                done.set()

            writer = threading.Thread(target=ingest)
            writer.start()
            seen = []
            with user_metrics.connect(url=app.api_url) as client:
                while not done.is_set():
                    seen.append(client.totals(START, END).requests)
                writer.join()
                seen.append(client.totals(START, END).requests)
        finally:
            svc.stop()
        assert seen == sorted(seen) and seen[-1] == len(TRUTHS)
        assert set(seen) <= sizes, "a reader saw part of an export"
        assert len(set(seen)) >= 3, "the reader should have overlapped the ingest"


class TestMemoryGuard:
    def test_the_guard_outlives_a_failed_reading_of_duckdbs_accounting(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """DuckDB can run out of memory reading its own accounting: that is pressure, so readers are
        interrupted, and the guard keeps watching. (It once stopped for good there; unguarded
        readers then took the writer's memory and an export failed.)"""
        con = duckdb.connect(str(tmp_path / "um.duckdb"), config={"memory_limit": "256MB"})
        readers = Readers(con.cursor(), Stats())
        calls = {"n": 0}
        real = Readers.pressure

        def flaky(self: Readers) -> int:
            calls["n"] += 1
            if calls["n"] <= 2:
                raise duckdb.OutOfMemoryException("Out of Memory Error: injected")
            return real(self)

        monkeypatch.setattr(Readers, "pressure", flaky)
        reader = readers.open()
        try:
            deadline = time.monotonic() + 30
            while calls["n"] < 5 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert calls["n"] >= 5, "the guard stopped after the failure"
            assert reader.stopped_for == "memory"
        finally:
            reader.close()
            readers.close()
            con.close()
