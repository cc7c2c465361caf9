"""What one node keeps its data in, by its settings: the single DuckDB file, or a lake.

- **Single file** (no ``lake``): the ``Store`` is written and read, as always.
- **Receiver in lake mode** (``lake`` set, ``ingest`` on): the node keeps its own DuckDB file
  (attribution, dedupe, acknowledgement: an Export is answered once its rows are committed there)
  with an outbox of every stored row, and a ``Shipper`` moves the outbox into the lake. Every
  reader reads the lake, so that every node answers alike; revenue imports and plan prices are
  written to the lake (in a lake transaction, serialized with every other node's writes).
- **Reader-only node** (``ingest`` off): no local file at all; every reader and every write of
  revenue or plan prices goes to the lake.

``Node`` gives the app what it needs whatever the mode: a reader opener, a way to run one write
transaction where the readers read (``run``), health, the lake's figures for ``/metrics``, and
start and stop (which ships what is left). The catalog's connection string is only ever shown
redacted (``store/lake.py``'s ``redact``): it may hold a password.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import duckdb

from user_metrics.errors import Unavailable
from user_metrics.serve.lake_metrics import LakeFigures
from user_metrics.settings import Settings
from user_metrics.stats import Stats
from user_metrics.store.lake_catalog import redact
from user_metrics.store.revenue import write_plan_prices
from user_metrics.store.writer import Store
from user_metrics.store.writer_connection import first_line

if TYPE_CHECKING:  # imported in lake mode only: the single file never loads DuckLake
    from user_metrics.store.lake import Lake
    from user_metrics.store.shipper import Shipper

T = TypeVar("T")


class LakeWrites:
    """The lake as ``import_revenue`` and the plan prices write it: ``run(work)`` is one lake
    write transaction (``Lake.in_turn``), its future already resolved when ``run`` returns.

    The work's SQL is the store's own, run on checked rows: a DuckDB error from it comes from the
    lake (with PostgreSQL down, DuckLake also raises binder and input errors, not only connection
    errors), so it is answered as ``Unavailable``, retry later."""

    def __init__(self, lake: Lake) -> None:
        self._lake = lake

    def run(self, work: Callable[[duckdb.DuckDBPyConnection], T]) -> Future[T]:
        future: Future[T] = Future()
        try:
            future.set_result(self._lake.in_turn(work))
        except duckdb.Error as exc:
            future.set_exception(Unavailable(f"the lake could not be written: {redact(first_line(exc))}"))
        except BaseException as exc:  # noqa: BLE001 - the caller's .result() raises it
            future.set_exception(exc)
        return future


class Node:
    """The store and the lake of one node, as its settings say (see the module's docstring)."""

    def __init__(self, settings: Settings, stats: Stats) -> None:
        self.settings = settings
        self._stats = stats
        self.store: Store | None = None
        self.lake: Lake | None = None
        self.shipper: Shipper | None = None
        # A database this start creates is removed again if the service cannot start listening.
        self.new_files = (
            [p for p in _database_files(settings.db) if not p.exists()] if settings.ingest else []
        )
        if settings.lake:
            from user_metrics.store.lake import Lake

            self.lake = Lake(
                settings.lake,
                settings.lake_data or None,
                stats,
                memory_limit_mib=settings.memory_limit_mib,
                max_dimension_values=settings.max_dimension_values,
            )
        try:
            if settings.ingest:
                self.store = Store(
                    settings.db,
                    stats,
                    memory_limit_mib=settings.memory_limit_mib,
                    max_queue_rows=settings.write_queue_rows,
                    attribution_window_seconds=settings.attribution_window_seconds,
                    max_dimension_values=settings.max_dimension_values,
                    outbox=self.lake is not None,
                )
            # The plan prices of the settings replace those of the last start, before anyone reads.
            prices = [(p.value, p.amount, p.per) for p in settings.prices()]
            self.run(lambda con: write_plan_prices(con, settings.plan_property.strip(), prices)).result()
        except BaseException:
            self.close(remove_new=True)
            raise

    @property
    def writes(self) -> Store | LakeWrites:
        """Where revenue imports and plan prices are written: where the readers read."""
        if self.lake is not None:
            return LakeWrites(self.lake)
        assert self.store is not None
        return self.store

    def run(self, work: Callable[[duckdb.DuckDBPyConnection], T]) -> Future[T]:
        """``work`` in one write transaction where the readers read."""
        return self.writes.run(work)

    def reader(self) -> duckdb.DuckDBPyConnection:
        """A reader cursor of the lake in lake mode, else of the store (close it when done)."""
        if self.lake is not None:
            return self.lake.reader()
        assert self.store is not None
        return self.store.reader()

    def health(self) -> str | None:
        """None while every part works; else what does not (what /healthz answers)."""
        problems = []
        if self.store is not None and (problem := self.store.health()):
            problems.append(f"store: {problem}" if self.lake is not None else problem)
        if self.lake is not None and (problem := self.lake.health()):
            problems.append(f"lake: {problem}")
        if self.shipper is not None and (lag := self.shipper.lag_seconds()) > self.settings.lake_max_lag:
            problems.append(
                f"lake: shipping is {lag:.0f} s behind (lake_max_lag {self.settings.lake_max_lag:g} s); "
                "exports are refused until it catches up"
            )
        return "; ".join(problems) or None

    @property
    def queue(self) -> tuple[int, int]:
        """(batches, rows) waiting for the store's writer (none on a reader-only node)."""
        return self.store.queue if self.store is not None else (0, 0)

    def figures(self) -> LakeFigures:
        """What this node did to the lake (``user_metrics_lake_*``)."""
        s = self._stats
        shipper = self.shipper
        return LakeFigures(
            shipped_rows=s.lake_shipped_rows,
            duplicate_rows=s.lake_duplicate_rows,
            commits=s.lake_commits,
            conflicts=s.lake_conflicts,
            failures=s.lake_ship_failures,
            outbox_rows=shipper.outbox_rows() if shipper is not None else 0,
            lag_seconds=shipper.lag_seconds() if shipper is not None else 0.0,
        )

    def start(self, grpc_port: int) -> None:
        """Start shipping (a receiver in lake mode), as ``hostname:grpc-port``: the node's name in
        the lake, unique while the node runs."""
        if self.store is not None and self.lake is not None:
            from user_metrics.store.shipper import Shipper

            self.shipper = Shipper(
                self.store,
                self.lake,
                self._stats,
                interval_s=self.settings.lake_ship_interval,
                max_lag_s=self.settings.lake_max_lag,
                node=f"{socket.gethostname()}:{grpc_port}",
            )
            self.shipper.start()

    def describe(self) -> str:
        """The lake, for the start-up log line (the catalog redacted); '' without one."""
        if self.lake is None:
            return ""
        return f"lake mode: catalog {redact(self.settings.lake)}, data {self.lake.data_path}"

    def close(self, grace: float = 10.0, *, remove_new: bool = False) -> None:
        """Stop shipping (shipping what is left, within ``grace``), close the store and the lake;
        ``remove_new``: remove the database files this start created (a start that failed)."""
        try:
            if self.shipper is not None:
                self.shipper.stop(grace)
            if self.store is not None:
                self.store.close()
        finally:
            if self.lake is not None:
                self.lake.close()
        if remove_new:
            for path in self.new_files:
                path.unlink(missing_ok=True)


def _database_files(db: str) -> list[Path]:
    """The files DuckDB makes for a database: the file and its write-ahead log."""
    return [Path(db), Path(db + ".wal")]
