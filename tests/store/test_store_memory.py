"""Reads never stop writes: memory-hungry readers, failed commits and failed rollbacks.

All cursors of the database share DuckDB's memory limit. A reader that takes it all must not make
a commit fail for good: the memory guard interrupts readers, a write that runs out of memory is
retried with readers held back, a rollback that fails is retried, and /healthz says when the
writer cannot commit.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, cast

import duckdb
import grpc
import pyarrow as pa
import pytest
from conftest import Service, counter_total, one_row_table
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from user_metrics.errors import Unavailable
from user_metrics.stats import Stats
from user_metrics.store import inserts, rollups, writer_connection
from user_metrics.store import writer as store_module
from user_metrics.store.dedupe import KEY_ROW_SQL
from user_metrics.store.writer import Store
from user_metrics.store.writer_connection import WriterConnection

# A SELECT whose aggregate state (a list of 3M strings) DuckDB cannot spill: more than 128 MiB.
# It answers one number, so that the time goes into taking memory, not into sending the answer.
HOG = "SELECT len(list(x)) FROM (SELECT repeat(chr(65), 50) || range::VARCHAR AS x FROM range(3000000))"


def llm_spans(batch: int, count: int) -> list[Any]:
    """``count`` finished LLM spans of distinct users, made by the OTel SDK."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "memory-test"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("tests")
    for i in range(count):
        with tracer.start_as_current_span(
            "chat gpt-4o-mini",
            attributes={
                "user.id": f"user-{batch}-{i}",
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": "openai",
                "gen_ai.request.model": "gpt-4o-mini",
                "gen_ai.usage.input_tokens": 100,
                "gen_ai.usage.output_tokens": 20,
            },
        ):
            pass
    provider.shutdown()
    return list(memory.get_finished_spans())


def get(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_memory_hungry_sql_does_not_stop_exports(tmp_path: Path) -> None:
    """Four readers each wanting more than DuckDB's whole memory limit, over and over, while the
    OTel exporter sends: every export is stored, the guard interrupted readers, /healthz is ok."""
    svc = Service(
        tmp_path / "um.duckdb", memory_limit_mib=128, sql_timeout_seconds=60, metrics_refresh_seconds=0
    )
    app = svc.start()
    stop = threading.Event()
    answers: list[int] = []

    def hog() -> None:
        while not stop.is_set():
            request = urllib.request.Request(
                f"{app.api_url}/api/v1/sql", data=json.dumps({"sql": HOG}).encode(), method="POST"
            )
            try:
                with urllib.request.urlopen(request, timeout=120) as response:
                    answers.append(response.status)
            except urllib.error.HTTPError as exc:
                answers.append(exc.code)

    hogs = [threading.Thread(target=hog) for _ in range(4)]
    for thread in hogs:
        thread.start()
    try:
        exporter = OTLPSpanExporter(endpoint=app.grpc_address, insecure=True, timeout=60)
        results = [exporter.export(llm_spans(b, 200)) for b in range(10)]
        exporter.shutdown()
    finally:
        stop.set()
        for thread in hogs:
            thread.join()
    assert results == [SpanExportResult.SUCCESS] * 10
    assert answers, "the readers never got an answer"
    assert counter_total(app.api_url, "user_metrics_reader_queries_stopped") > 0
    status, body = get(f"{app.api_url}/healthz")
    assert (status, body["status"]) == (200, "ok")
    rows = svc.rows()
    assert len(rows) == 2000
    assert len({r["user_id"] for r in rows}) == 2000


class TestWriterRecovery:
    """Failures injected into the writer's transactions, on a real store file."""

    def test_a_failing_commit_makes_healthz_fail_until_writes_succeed_again(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """While commits fail, /healthz answers 503 naming why; once the store can commit again
        (found by its own probe, without any export), it answers ok."""
        svc = Service(tmp_path / "um.duckdb")
        app = svc.start()
        real_apply = rollups.apply

        def broken(con: duckdb.DuckDBPyConnection, rows: str, *bound: Any) -> Any:
            raise duckdb.IOException("IO Error: the disk went away (injected)")

        monkeypatch.setattr(rollups, "apply", broken)
        exporter = OTLPSpanExporter(endpoint=app.grpc_address, insecure=True, timeout=2)
        assert exporter.export(llm_spans(0, 3)) == SpanExportResult.FAILURE
        status, body = get(f"{app.api_url}/healthz")
        assert status == 503
        assert "the disk went away" in body["error"]
        monkeypatch.setattr(rollups, "apply", real_apply)
        deadline = time.monotonic() + 30
        while get(f"{app.api_url}/healthz")[0] != 200 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert get(f"{app.api_url}/healthz")[0] == 200
        exporter = OTLPSpanExporter(endpoint=app.grpc_address, insecure=True, timeout=30)
        assert exporter.export(llm_spans(1, 3)) == SpanExportResult.SUCCESS
        assert len(svc.rows()) == 3

    @pytest.mark.parametrize(("rollback_failures", "reopens"), [(1, 0), (2, 1)])
    def test_a_failed_rollback_is_retried_or_the_database_reopened(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rollback_failures: int, reopens: int
    ) -> None:
        """A write runs out of memory on every try, and ROLLBACK fails too: once, it is retried
        at once; twice, the database is opened again (a failed ROLLBACK invalidates DuckDB's).
        That write fails, retryably; the next one works, and nothing of the first is stored."""
        monkeypatch.setattr(writer_connection, "MEMORY_RETRY_PAUSES_S", (0.01, 0.01))
        store = Store(tmp_path / "um.duckdb", Stats())
        try:
            out_of_memory = threading.Event()
            out_of_memory.set()
            real_insert_all = inserts.insert_all

            def insert_all(con: duckdb.DuckDBPyConnection, *args: Any) -> Any:
                if out_of_memory.is_set():
                    con.execute(f"INSERT INTO span_keys SELECT {KEY_ROW_SQL} FROM batch")  # half done
                    raise duckdb.OutOfMemoryException("Out of Memory Error: injected")
                return real_insert_all(con, *args)

            rollbacks = {"left": rollback_failures}
            real_try_rollback = WriterConnection._try_rollback

            def try_rollback(self: WriterConnection) -> None:
                if rollbacks["left"]:
                    rollbacks["left"] -= 1
                    raise duckdb.OutOfMemoryException("Out of Memory Error: injected into ROLLBACK")
                real_try_rollback(self)

            monkeypatch.setattr(inserts, "insert_all", insert_all)
            monkeypatch.setattr(WriterConnection, "_try_rollback", try_rollback)
            with pytest.raises(Unavailable, match="Out of Memory"):
                store.write(one_row_table("a")).result(timeout=60)
            out_of_memory.clear()
            assert store.write(one_row_table("b")).result(timeout=60) == 1
            assert store.write(one_row_table("a")).result(timeout=60) == 1, "a's half insert left nothing"
            assert store.health() is None
            assert store._stats.store_reopens == reopens
            with store.reader() as con:
                assert sorted(con.execute("SELECT span_id FROM requests").fetchall()) == [
                    ("a" * 16,),
                    ("b" * 16,),
                ]
        finally:
            store.close()

    @pytest.mark.parametrize("committed", [False, True])
    def test_a_failed_commit_reopens_the_database_and_stores_the_batch_once(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, committed: bool
    ) -> None:
        """COMMIT failing part-way can leave DuckDB's memory inconsistent: the store opens the
        database again and retries. Whether or not the failed COMMIT had in fact committed, the
        batch is stored once."""
        store = Store(tmp_path / "um.duckdb", Stats())
        try:
            real_transaction = WriterConnection.transaction
            failures = {"left": 1}

            def transaction(self: WriterConnection, work: Any) -> Any:
                if failures["left"] and getattr(work, "__qualname__", "").startswith(
                    "insert."
                ):  # inserts.insert
                    failures["left"] -= 1
                    self.con.execute("BEGIN")
                    work(self.con)
                    self.con.execute("COMMIT" if committed else "ROLLBACK")
                    raise writer_connection._Unsettled("COMMIT failed: injected")
                return real_transaction(self, work)

            monkeypatch.setattr(WriterConnection, "transaction", transaction)
            assert store.write(one_row_table("c")).result(timeout=60) == 1
            assert store._stats.store_reopens == 1
            assert store.health() is None
            with store.reader() as con:
                assert con.execute("SELECT span_id FROM requests").fetchall() == [("c" * 16,)]
                assert con.execute("SELECT sum(requests) FROM user_totals").fetchall() == [(1,)]
        finally:
            store.close()

    def test_a_temp_table_a_failed_create_left_behind_reopens_the_database(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """DuckDB 1.5.6: a ``CREATE OR REPLACE TEMP TABLE`` that runs out of memory can leave its
        entry in the writer connection's temporary catalog, which ROLLBACK does not remove; every
        later CREATE of that name on that connection fails with a catalog write-write conflict
        (an export answered UNAVAILABLE under load). Injected as DuckDB behaves: the first
        ``apply`` runs out of memory, and its connection answers every later one with the conflict.
        The writer opens the database again, and the batch is stored once."""
        monkeypatch.setattr(writer_connection, "MEMORY_RETRY_PAUSES_S", (0.01, 0.01))
        store = Store(tmp_path / "um.duckdb", Stats())
        try:
            real_apply = rollups.apply
            poisoned: list[duckdb.DuckDBPyConnection] = []

            def apply(con: duckdb.DuckDBPyConnection, rows: str, *bound: Any) -> Any:
                if not poisoned:
                    poisoned.append(con)
                    con.execute(f"CREATE OR REPLACE TEMP TABLE rollup_input AS SELECT * FROM {rows}")
                    raise duckdb.OutOfMemoryException(
                        "Out of Memory Error: could not allocate block (injected)"
                    )
                if con is poisoned[0]:
                    raise duckdb.TransactionException(
                        "TransactionContext Error: Catalog write-write conflict on create with "
                        '"Schema\\0main\\0main\\0Table\\0main\\0rollup_input" (injected)'
                    )
                return real_apply(con, rows, *bound)

            monkeypatch.setattr(rollups, "apply", apply)
            assert store.write(one_row_table("f")).result(timeout=60) == 1
            assert store._stats.store_reopens == 1
            assert store.health() is None
            with store.reader() as con:
                assert con.execute("SELECT span_id FROM requests").fetchall() == [("f" * 16,)]
                assert con.execute("SELECT sum(requests) FROM user_totals").fetchall() == [(1,)]
        finally:
            store.close()

    def test_a_begin_that_runs_out_of_memory_is_rolled_back(self, tmp_path: Path) -> None:
        """A BEGIN that runs out of memory can leave an aborted transaction open (DuckDB 1.5.6):
        it is rolled back, so the retry can begin, instead of every later write on the
        connection failing with "Current transaction is aborted"."""
        db = WriterConnection(
            str(tmp_path / "um.duckdb"), Stats(), memory_limit_mib=0, max_dimension_values=10
        )
        real = db.con

        class BeginFailsOnce:
            """The writer's connection, whose first BEGIN opens a transaction, aborts it, and
            fails for lack of memory, as DuckDB's can."""

            failed = False

            def __getattr__(self, name: str) -> Any:
                return getattr(real, name)

            def execute(self, sql: str, *args: Any) -> Any:
                if sql == "BEGIN" and not self.failed:
                    self.failed = True
                    real.execute("BEGIN")
                    with pytest.raises(duckdb.Error):
                        real.execute("SELECT error('aborts the transaction')")
                    raise duckdb.OutOfMemoryException(
                        "Out of Memory Error: failed to allocate data (injected)"
                    )
                return real.execute(sql, *args)

        try:
            db.con = cast(duckdb.DuckDBPyConnection, BeginFailsOnce())
            db.in_transaction(lambda con: con.execute("CREATE TABLE kept AS SELECT 1 AS one"))
            db.con = real
            assert real.execute("SELECT one FROM kept").fetchall() == [(1,)]
        finally:
            db.con = real
            db.close()

    def test_a_view_the_registry_forgot_is_replaced(self, tmp_path: Path) -> None:
        """A view of the writer's connection that DuckDB keeps but its registry of Arrow views
        forgot (seen under memory pressure: every later export failed with 'View with name
        "facts" already exists') is replaced by the next ``registered``."""
        db = WriterConnection(
            str(tmp_path / "um.duckdb"), Stats(), memory_limit_mib=0, max_dimension_values=10
        )
        try:
            db.con.execute("CREATE TEMP VIEW facts AS SELECT 'left behind' AS x")
            with writer_connection.registered(db.con, {"facts": pa.table({"x": ["new"]})}):
                assert db.con.execute("SELECT x FROM facts").fetchall() == [("new",)]
        finally:
            db.close()

    def test_an_invalidated_database_is_opened_again_and_keeps_every_commit(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A real fatal DuckDB error (a checkpoint aborted with DuckDB's own debug setting)
        invalidates the database; the writer opens it again, nothing committed is lost, and it
        goes on storing."""
        real_lock_down = writer_connection.lock_down

        def lock_down(con: duckdb.DuckDBPyConnection) -> None:
            if not getattr(lock_down, "done", False):
                lock_down.done = True  # type: ignore[attr-defined]
                con.execute("SET debug_checkpoint_abort = 'before_truncate'")
            real_lock_down(con)

        monkeypatch.setattr(writer_connection, "lock_down", lock_down)
        monkeypatch.setattr(store_module, "CHECKPOINT_WAL_BYTES", 1)
        store = Store(tmp_path / "um.duckdb", Stats())
        try:
            assert store.write(one_row_table("d")).result(timeout=60) == 1  # then the checkpoint fails
            deadline = time.monotonic() + 30
            while store._stats.store_reopens == 0 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert store._stats.store_reopens == 1
            assert store.write(one_row_table("e")).result(timeout=60) == 1
            assert store.health() is None
            with store.reader() as con:
                assert sorted(con.execute("SELECT span_id FROM requests").fetchall()) == [
                    ("d" * 16,),
                    ("e" * 16,),
                ]
        finally:
            store.close()


class TestStoppedReadersAnswer503:
    """A query the store interrupts to keep its memory is answered 503 / UNAVAILABLE (retry),
    whatever the reader; never 500, nor a time limit it did not reach."""

    def stop_readers_while(self, svc: Service, running: threading.Thread) -> None:
        """Interrupt every open reader "for memory", again and again, until ``running`` ends."""
        assert svc.app is not None
        deadline = time.monotonic() + 60
        while running.is_alive() and time.monotonic() < deadline:
            svc.app.store._db.readers.interrupt_all("memory")
            time.sleep(0.05)
        running.join(1)

    def test_sql(self, tmp_path: Path) -> None:
        svc = Service(tmp_path / "um.duckdb", sql_timeout_seconds=120)
        app = svc.start()
        try:
            answer: dict[str, Any] = {}

            def ask() -> None:
                request = urllib.request.Request(
                    f"{app.api_url}/api/v1/sql",
                    data=json.dumps({"sql": "SELECT count(*) FROM range(1000000000000)"}).encode(),
                    method="POST",
                )
                try:
                    urllib.request.urlopen(request, timeout=120).read()
                except urllib.error.HTTPError as exc:
                    answer.update(json.loads(exc.read()), retry=exc.headers.get("Retry-After"))

            asking = threading.Thread(target=ask)
            asking.start()
            self.stop_readers_while(svc, asking)
            assert (answer["status"], answer["retry"]) == (503, "1")
            assert "stopped to keep storing spans" in answer["error"]
            assert counter_total(app.api_url, "user_metrics_reader_queries_stopped", reason="memory") > 0
        finally:
            svc.stop()

    def test_api_and_grpc_queries(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """The same for a query of the HTTP API and of the gRPC query service."""
        from servers import SlowQuery

        from user_metrics.v1 import user_metrics_pb2 as pb
        from user_metrics.v1.user_metrics_pb2_grpc import UserMetricsServiceStub

        svc = Service(tmp_path / "um.duckdb", query_timeout_seconds=120)
        app = svc.start()
        try:
            with SlowQuery(monkeypatch):
                http_answer = []
                asking = threading.Thread(
                    target=lambda: http_answer.append(get(f"{app.api_url}/api/v1/users"))
                )
                asking.start()
                self.stop_readers_while(svc, asking)
                ((status, body),) = http_answer
                assert status == 503 and "stopped to keep storing spans" in body["error"]

                with grpc.insecure_channel(app.grpc_address) as channel:
                    call = UserMetricsServiceStub(channel).ListUsers.future(
                        pb.ListUsersRequest(), timeout=120
                    )
                    waiting = threading.Thread(target=call.exception)
                    waiting.start()
                    self.stop_readers_while(svc, waiting)
                    error = call.exception()
                assert error is not None and error.code() == grpc.StatusCode.UNAVAILABLE
                assert "stopped to keep storing spans" in error.details()
        finally:
            svc.stop()


def test_slow_grpc_queries_do_not_hold_up_exports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every gRPC worker busy with a query that runs for hours: an Export is still stored (the
    queries have threads of their own)."""
    from servers import SlowQuery

    from user_metrics.v1 import user_metrics_pb2 as pb
    from user_metrics.v1.user_metrics_pb2_grpc import UserMetricsServiceStub

    svc = Service(tmp_path / "um.duckdb", grpc_workers=2, query_timeout_seconds=3600)
    app = svc.start()
    try:
        with SlowQuery(monkeypatch), grpc.insecure_channel(app.grpc_address) as channel:
            stub = UserMetricsServiceStub(channel)
            calls = [stub.ListUsers.future(pb.ListUsersRequest(), timeout=120) for _ in range(4)]
            exporter = OTLPSpanExporter(endpoint=app.grpc_address, insecure=True, timeout=30)
            assert exporter.export(llm_spans(0, 5)) == SpanExportResult.SUCCESS
            for call in calls:
                call.cancel()
        assert len(svc.rows()) == 5
    finally:
        svc.stop()
