"""The writer's DuckDB connection: transactions that always end, safe from the readers' memory.

The store's writer thread does all its work through ``WriterConnection.in_transaction`` (or
``with_memory`` for work of several transactions). Three failures get special care, because
readers share DuckDB's memory limit with the writer:
- out of memory: the work runs again with the readers held back (``Readers.exclusive``), a few
  times over a few seconds; and it starts that way when readers already hold past their share;
- a ROLLBACK that fails (it can run out of memory too): tried again with readers held back;
- a failed COMMIT, a failed ROLLBACK, a fatal error: DuckDB may be inconsistent (a COMMIT that
  ran out of memory part-way left an in-memory column one row short; a failed ROLLBACK or
  checkpoint invalidates the database), so the file is opened again (``reopen``) and the work
  retried. So too after a catalog write-write conflict (``_catalog_conflict``): a
  ``CREATE ... TEMP TABLE`` that runs out of memory can leave an entry that ROLLBACK does not
  remove in the connection's own temporary catalog, and creating that name on it fails for ever.
  The WAL holds every committed transaction; DuckDB's checkpoint at shutdown is off, so an
  instance left behind writes nothing.
It also owns the checkpoints, which DuckDB is not left to make on its own at commit: a checkpoint
that runs out of memory invalidates the database, so the writer makes them when the WAL passes
``CHECKPOINT_WAL_BYTES`` and no reader is open, or passes ``FORCE_CHECKPOINT_WAL_BYTES``,
holding readers back.

Every statement the writer runs ends by taking the GIL back from whatever thread holds it (the
mappers, busy in Python). CPython makes a holder give it up only after the switch interval,
5 ms by default, which tripled the cost of a commit's dozen statements under load; so opening
the writer's connection lowers the process's switch interval to ``SWITCH_INTERVAL_S`` (never
raises it). Threads that only compute switch a little more often; nothing else changes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

import duckdb
import pyarrow as pa

from user_metrics.errors import Unavailable
from user_metrics.stats import Stats
from user_metrics.store import schema
from user_metrics.store.readers import Readers
from user_metrics.store.schema import lock_down

log = logging.getLogger(__name__)

# Errors caused by the rows themselves (a value DuckDB cannot hold), not by the database.
DATA_ERRORS = (duckdb.DataError, pa.ArrowException, UnicodeError, OverflowError)
CHECKPOINT_WAL_BYTES = 16 * 1024 * 1024
FORCE_CHECKPOINT_WAL_BYTES = 256 * 1024 * 1024
# Pauses between the writer's retries after running out of memory, readers held back (about 6 s).
MEMORY_RETRY_PAUSES_S = (0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.0)
# How long a thread busy in Python may keep the GIL the writer waits for, after each statement.
SWITCH_INTERVAL_S = 0.0005
T = TypeVar("T")


class _Unsettled(duckdb.Error):
    """The writer's connection may be inconsistent (a failed COMMIT or ROLLBACK): reopen first."""


class WriterConnection:
    """The database file opened for the writer, and the ``Readers`` that lend cursors of it."""

    def __init__(
        self,
        path: str,
        stats: Stats,
        *,
        memory_limit_mib: int,
        max_dimension_values: int,
        on_reopen: Callable[[], None] = lambda: None,
    ) -> None:
        self.path = path
        self._stats = stats
        sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL_S))
        self._on_reopen = on_reopen
        # DuckDB's default buffer pool is 80 % of RAM: it keeps every block it ever read.
        # No checkpoint of DuckDB's own at commit (see CHECKPOINT_WAL_BYTES): none for the WAL's
        # size, nor instead of writing a large commit to the WAL.
        self._config: dict[str, str | bool | int | float | list[str]] = {
            "checkpoint_threshold": "1TB",
            "auto_checkpoint_skip_wal_threshold": 2**62,
        }
        if memory_limit_mib:
            self._config["memory_limit"] = f"{memory_limit_mib}MiB"
        try:
            self.con = duckdb.connect(path, config=self._config)
        except duckdb.Error as exc:
            raise Unavailable(f"cannot open database {path}: {exc}") from exc
        schema.create_or_upgrade(self.con, path, max_dimension_values)
        lock_down(self.con)
        # Why the last write failed (None once one succeeds): what /healthz reports.
        self.failure: str | None = None
        # Readers get cursors of their own, made from a connection the writer thread never uses.
        self._reader_root = self.con.cursor()
        self.readers = Readers(self._reader_root.cursor(), stats)

    def close(self) -> None:
        """Checkpoint (readers held back), then close every connection."""
        try:
            with self.readers.exclusive():
                self.con.execute("CHECKPOINT")
        finally:
            self.readers.close()
            self._reader_root.close()
            self.con.close()

    def in_transaction(self, work: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        """``work`` in one transaction of the writer's connection: committed, or rolled back."""
        return self.with_memory(lambda: self.transaction(work))

    def with_memory(self, attempt: Callable[[], T]) -> T:
        """``attempt()`` (one or more transactions), kept safe from the readers' memory.

        Readers share DuckDB's memory limit. When they hold more than their share already, the
        attempt runs with readers held back (``Readers.exclusive``). If it runs out of memory all
        the same, it is tried again, readers held back, a few times over a few seconds (a reader
        that was interrupted gives its memory back only when it closes). If DuckDB may have been
        left inconsistent (a failed COMMIT or ROLLBACK, a fatal error), the database is opened
        anew first (``_reopen``).
        """
        if self.readers.over_share():
            self._stats.add(writer_memory_retries=1)
            with self.readers.exclusive():
                return self._recovering(attempt)
        try:
            return self._recovering(attempt)
        except duckdb.OutOfMemoryException as exc:
            log.warning("the writer ran out of memory (%s); retrying, readers held back", first_line(exc))
        with self.readers.exclusive():
            for pause in MEMORY_RETRY_PAUSES_S:
                self._stats.add(writer_memory_retries=1)
                try:
                    return self._recovering(attempt)
                except duckdb.OutOfMemoryException as exc:
                    log.warning("the writer still lacks memory (%s)", first_line(exc))
                time.sleep(pause)
            self._stats.add(writer_memory_retries=1)
            return self._recovering(attempt)

    def _recovering(self, attempt: Callable[[], T]) -> T:
        """``attempt()``; after a failure that may have left DuckDB inconsistent, the database is
        opened again and the attempt made once more (what it committed before is stored once)."""
        try:
            return attempt()
        except (_Unsettled, duckdb.FatalException, duckdb.ConnectionException) as exc:
            self.reopen(exc)  # ConnectionException: an earlier reopen failed half-way
        except duckdb.TransactionException as exc:
            if not _catalog_conflict(exc):
                raise
            self.reopen(exc)
        return attempt()

    def transaction(self, work: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        con = self.con
        try:
            # BEGIN too: one that runs out of memory can leave an aborted transaction open, and
            # every later BEGIN on the connection would fail ("Current transaction is aborted").
            con.execute("BEGIN")
            result = work(con)
        except BaseException:
            self._rollback()
            raise
        try:
            con.execute("COMMIT")
        except duckdb.Error as exc:
            # A COMMIT that fails part-way (out of memory, say) can leave DuckDB's in-memory tables
            # inconsistent: nothing more is done on this connection before the database is reopened.
            raise _Unsettled(f"COMMIT failed: {first_line(exc)}") from exc
        return result

    def _rollback(self) -> None:
        """End the failed transaction. ROLLBACK itself can fail (it too may need memory): it is tried
        again with the readers held back, and if that fails, the database must be reopened."""
        try:
            self._try_rollback()
        except duckdb.Error as first:
            log.warning("rollback failed (%s); retrying with readers held back", first_line(first))
            try:
                with self.readers.exclusive():
                    self._try_rollback()
            except duckdb.Error as exc:
                raise _Unsettled(f"ROLLBACK failed: {first_line(exc)}") from exc

    def _try_rollback(self) -> None:
        try:
            self.con.execute("ROLLBACK")
        except duckdb.TransactionException as exc:
            if "no transaction is active" not in str(exc):
                raise

    def reopen(self, why: BaseException) -> None:
        """Close every connection of the database and open the file again.

        DuckDB invalidates a database after a failed ROLLBACK or checkpoint, and a failed COMMIT
        can leave its in-memory tables inconsistent. The file and its WAL hold every committed
        transaction (DuckDB's own checkpoint at shutdown is off, so the old instance writes
        nothing more), so opening it again replays them; readers are held back meanwhile, and
        their open cursors, of the old instance, fail.
        """
        log.error("reopening the database after %s", first_line(why))
        self._stats.add(store_reopens=1)
        with self.readers.exclusive():
            for con in (self._reader_root, self.con):
                with contextlib.suppress(duckdb.Error):
                    con.close()
            try:
                self.con = duckdb.connect(self.path, config=self._config)
                lock_down(self.con)
            except duckdb.Error as exc:
                self.failure = f"the database could not be opened again: {first_line(exc)}"
                log.critical(self.failure)
                raise Unavailable(self.failure) from exc
            self._reader_root = self.con.cursor()
            self.readers.replace_root(self._reader_root.cursor())
        self._on_reopen()
        log.info("database reopened")

    def probe(self) -> None:
        """A small write, to learn whether the store can commit again (clears ``failure`` if so)."""
        try:
            self.in_transaction(
                lambda con: con.execute(
                    "INSERT INTO meta VALUES ('last_probe', $t) "
                    "ON CONFLICT DO UPDATE SET value = excluded.value",
                    {"t": str(time.time_ns())},
                )
            )
        except duckdb.Error as exc:
            log.warning("the store still cannot commit: %s", first_line(exc))
        else:
            log.info("the store can commit again")
            self.failure = None

    def maybe_checkpoint(self, at_bytes: int) -> None:
        """Checkpoint once the WAL has ``at_bytes``, while no reader holds memory, or once it has
        FORCE_CHECKPOINT_WAL_BYTES, holding readers back (see CHECKPOINT_WAL_BYTES)."""
        try:
            wal = os.path.getsize(self.path + ".wal")
        except OSError:
            return
        if wal < at_bytes or (wal < FORCE_CHECKPOINT_WAL_BYTES and self.readers.open_count):
            return
        try:
            with self.readers.exclusive():
                self.con.execute("CHECKPOINT")
        except duckdb.FatalException as exc:
            # The checkpoint is tried again as the WAL grows; if reopening fails, health() says so.
            with contextlib.suppress(Unavailable):
                self.reopen(exc)
        except duckdb.Error:
            log.exception("checkpoint failed; the WAL keeps growing until the next one succeeds")


@contextlib.contextmanager
def registered(con: duckdb.DuckDBPyConnection, tables: dict[str, pa.Table | None]) -> Iterator[None]:
    """The tables (those not None) as views of ``con`` for the block. A view a failed unregister
    left behind (it can run out of memory too) is replaced, not an error for ever after."""
    names = [name for name, table in tables.items() if table is not None]
    try:
        for name in names:
            with contextlib.suppress(duckdb.Error):
                con.unregister(name)
            # A view DuckDB still has but the connection's registry forgot (a register or unregister
            # that failed part-way, seen under memory pressure): unregister leaves it, and register
            # would fail with "already exists" for every later write.
            con.execute(f'DROP VIEW IF EXISTS "{name}"')
            con.register(name, tables[name])
        yield
    finally:
        for name in names:
            with contextlib.suppress(duckdb.Error):
                con.unregister(name)


def _catalog_conflict(exc: duckdb.Error) -> bool:
    """Whether ``exc`` is DuckDB's "Catalog write-write conflict": on the writer's connection, an
    entry that a failed statement of its own left behind, not another writer's.

    Only the writer's connection writes the database, and each connection has a temporary catalog
    of its own (for the ``CREATE OR REPLACE TEMP TABLE``s of a write). With DuckDB 1.5.6, such a
    CREATE that runs out of memory can leave the table's dependency entry in that catalog, owned by
    the failed transaction, though its ROLLBACK succeeds (DuckDB apparently adds the entry before
    the undo record, whose allocation failed). Every later CREATE of that name on the connection
    then fails with this conflict, with or without memory pressure; a new connection starts with
    an empty temporary catalog: ``reopen``.
    """
    return "Catalog write-write conflict" in str(exc)


def first_line(exc: BaseException) -> str:
    """The first line of a DuckDB error (the rest is advice on settings)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
