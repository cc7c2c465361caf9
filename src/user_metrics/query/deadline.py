"""Readers' queries under a deadline: each on a cursor and a thread of its own, answered in time.

DuckDB's ``interrupt()`` stops a query between the steps of its execution, but not while it
parses, binds, plans or optimises a statement, nor inside one step (one function over one block
of 2,048 rows). So the caller does not wait for the query to stop: at the deadline it interrupts
the cursor and raises at once, and the query's thread ends whenever DuckDB returns. A query
keeps its slot (``max_running``) until then, so the queries DuckDB cannot stop still count.

A query the store interrupted to keep its memory (``Reader.stopped_for``) is answered
``stopped_error``: 503, retryable.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import duckdb

from user_metrics.errors import Unavailable

log = logging.getLogger(__name__)

T = TypeVar("T")

INTERRUPT_EVERY_S = 0.05  # how often a query past its deadline is interrupted again


def stopped_error(con: Any) -> Unavailable | None:
    """Why the store interrupted the query on reader ``con`` (503, retryable), or None if it did not."""
    reason = getattr(con, "stopped_for", None)
    if reason is None:
        return None
    why = {
        "memory": "it needed more of DuckDB's memory than readers may take",
        "writer": "the store needed all of DuckDB's memory for a moment",
    }.get(reason, reason)
    return Unavailable(f"the query was stopped to keep storing spans: {why}; retry, or ask for less")


class QueryRunner:
    """Runs ``work(cursor)`` on a fresh reader cursor on a thread of its own, under a deadline.

    ``open_reader`` gives the cursor (closed when the work ends). With ``max_running``, at most
    that many queries run at once, counting those that passed their deadline but have not ended.
    """

    def __init__(
        self, open_reader: Callable[[], duckdb.DuckDBPyConnection], *, max_running: int | None = None
    ) -> None:
        self._open_reader = open_reader
        self._slots = threading.BoundedSemaphore(max_running) if max_running else None
        self.max_running = max_running
        self._lock = threading.Lock()
        self._running: set[_Query] = set()
        self._stopping = False
        self._idle = threading.Condition(self._lock)

    @property
    def running(self) -> int:
        """Queries whose thread has not ended yet (some may be past their deadline)."""
        with self._lock:
            return len(self._running)

    def run(
        self,
        work: Callable[[duckdb.DuckDBPyConnection], T],
        timeout: float,
        timed_out: Callable[[], Exception],
        busy: Callable[[], Exception] | None = None,
    ) -> T:
        """``work``'s answer, or ``timed_out()`` raised at the deadline (the query is interrupted).

        When ``max_running`` queries are running already, ``busy()`` is raised at once.
        """
        if self._slots is not None and not self._slots.acquire(blocking=False):
            raise (busy() if busy else Unavailable("too many queries are running; retry later"))
        try:
            with self._lock:
                if self._stopping:
                    raise Unavailable("the server is stopping")
            query = _Query(self._open_reader())
        except BaseException:
            if self._slots is not None:
                self._slots.release()
            raise
        with self._lock:
            self._running.add(query)
        try:
            threading.Thread(target=self._work, args=(query, work), name="reader-query", daemon=True).start()
        except RuntimeError:  # no thread to be had: give everything back
            self._ended(query)
            raise Unavailable("cannot start a query now; retry later") from None
        try:
            answer: T = query.future.result(timeout)
            return answer
        except concurrent.futures.TimeoutError:
            query.interrupt()
            raise timed_out() from None
        except duckdb.InterruptException:
            if self._stopping:
                raise Unavailable("the server is stopping") from None
            raise (stopped_error(query.con) or timed_out()) from None

    def _work(self, query: _Query, work: Callable[[duckdb.DuckDBPyConnection], T]) -> None:
        try:
            query.future.set_result(work(query.con))
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting caller, who re-raises it
            query.future.set_exception(exc)
        finally:
            self._ended(query)

    def _ended(self, query: _Query) -> None:
        query.close()
        with self._lock:
            self._running.discard(query)
            self._idle.notify_all()
        if self._slots is not None:
            self._slots.release()

    def stop(self, grace: float) -> None:
        """Refuse new queries, interrupt the running ones, and wait up to ``grace`` seconds for them."""
        deadline = time.monotonic() + grace
        with self._lock:
            self._stopping = True
            running = list(self._running)
        for query in running:
            query.interrupt()
        with self._lock:
            while self._running and self._idle.wait(max(0.0, deadline - time.monotonic())):
                pass
            if self._running:
                log.warning("%d reader queries still in DuckDB after %g s", len(self._running), grace)


class _Query:
    """One query's cursor and answer."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con
        self.future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._lock = threading.Lock()  # interrupt() and close() race
        self._closed = threading.Event()
        self._interrupted = False

    def interrupt(self) -> None:
        """Stop the query, and any statement its work starts after this one, until it ends."""
        with self._lock:
            if self._interrupted or self._closed.is_set():
                return
            self._interrupted = True
        # DuckDB forgets an interrupt that arrives between two statements (the next one clears
        # it), so the cursor is interrupted again and again until the work returns.
        threading.Thread(target=self._keep_interrupting, name="reader-interrupt", daemon=True).start()

    def _keep_interrupting(self) -> None:
        while True:
            with self._lock:
                if self._closed.is_set():
                    return
                self.con.interrupt()
            self._closed.wait(INTERRUPT_EVERY_S)

    def close(self) -> None:
        with self._lock:
            self._closed.set()
            with contextlib.suppress(duckdb.Error):
                self.con.close()
