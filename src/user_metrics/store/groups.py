"""Group commit: the writes waiting for the writer, and which of them go into the next commit.

Small writes go first, so a one-span export waits for at most the commit under way, never for
the big exports queued before it; the rest follow in arrival order, up to ``max_group_rows``
rows a commit.
"""

from __future__ import annotations

import queue
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import duckdb
import pyarrow as pa

# Writes of at most this many rows are committed before bigger ones that were queued first.
SMALL_WRITE_ROWS = 1024


@dataclass
class Pending:
    """One ``Store.write`` waiting for its commit; ``future`` resolves once it is durable."""

    table: pa.Table
    future: Future[int]
    waiting: pa.Table | None = None  # rows for `pending`
    facts: pa.Table | None = None  # rows for `span_facts`


@dataclass
class Job:
    """Work of its own for the writer thread (``Store.run``): one transaction, not grouped with
    other writes; ``future`` resolves with its result once committed, or with its error."""

    work: Callable[[duckdb.DuckDBPyConnection], Any]
    future: Future[Any]

    def run(self, in_transaction: Callable[[Callable[[duckdb.DuckDBPyConnection], Any]], Any]) -> None:
        try:
            self.future.set_result(in_transaction(self.work))
        except Exception as exc:  # noqa: BLE001 - the caller gets it; the writer goes on
            self.future.set_exception(exc)


def refuse_queued(items: queue.Queue[Any], error: Exception) -> None:
    """Fail every write and job still in ``items`` with ``error`` (they will never be committed)."""
    while True:
        try:
            item = items.get_nowait()
        except queue.Empty:
            return
        if isinstance(item, Pending | Job):
            item.future.set_exception(error)


def next_group(backlog: list[Pending], max_group_rows: int) -> list[Pending]:
    """Take the writes of the next commit out of ``backlog``: the small ones first, so that a
    small export waits for at most the commit under way, not for the big ones queued before
    it; then the rest in arrival order, up to ``max_group_rows`` rows (at least one write)."""
    small = [p for p in backlog if rows(p) <= SMALL_WRITE_ROWS]
    candidates = small or backlog
    group: list[Pending] = []
    total = 0
    for pending in candidates:
        if group and total + rows(pending) > max_group_rows:
            break
        group.append(pending)
        total += rows(pending)
    taken = {id(p) for p in group}
    backlog[:] = [p for p in backlog if id(p) not in taken]
    return group


def rows(pending: Pending) -> int:
    return pending.table.num_rows + (pending.waiting.num_rows if pending.waiting is not None else 0)


def concat(parts: list[pa.Table | None]) -> pa.Table | None:
    present = [p for p in parts if p is not None and p.num_rows]
    if not present:
        return None
    return present[0] if len(present) == 1 else pa.concat_tables(present)
