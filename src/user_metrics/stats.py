"""The service's own counters (spans received, stored, rejected; commits), thread-safe."""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field


@dataclass
class Stats:
    """Monotonic counters, read by logs now and by ``/metrics`` later."""

    exports: int = 0
    spans_received: int = 0
    spans_skipped: int = 0  # not LLM calls
    spans_rejected: Counter[str] = field(default_factory=Counter)  # by reason
    spans_stored: int = 0
    spans_duplicate: int = 0
    spans_past_horizon: int = 0  # started before span_keys holds keys: checked against requests
    spans_attributed: int = 0  # stored after waiting, with a user id from a later request
    spans_cache_added_to_input: int = 0  # input counted without cache: cache added to it
    limit_cuts: Counter[str] = field(default_factory=Counter)  # by the setting that cut
    exports_refused: Counter[str] = field(default_factory=Counter)  # retry-later answers, by reason
    reads_limited: Counter[str] = field(default_factory=Counter)  # queries stopped, refused or cut, by bound
    commits: int = 0
    commit_seconds: float = 0.0
    compactions: int = 0
    compaction_seconds: float = 0.0
    rollup_rows_merged: int = 0
    writer_memory_retries: int = 0  # writes retried (or made) with readers held back for memory
    store_reopens: int = 0  # the database closed and opened again after DuckDB failed inconsistently
    readers_stopped: Counter[str] = field(default_factory=Counter)  # reader queries interrupted, by why
    # Lake mode (store/lake.py, store/shipper.py): rows shipped into the lake, rows found there
    # already (a re-ship, a span that reached two nodes), lake write transactions committed,
    # conflicts retried, ship attempts that failed, catalog reattaches, lake compactions.
    lake_shipped_rows: int = 0
    lake_duplicate_rows: int = 0
    lake_commits: int = 0
    lake_conflicts: int = 0
    lake_ship_failures: int = 0
    lake_reattaches: int = 0
    lake_compactions: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **amounts: int | float) -> None:
        with self._lock:
            for name, amount in amounts.items():
                setattr(self, name, getattr(self, name) + amount)

    def reject(self, reason: str, count: int = 1) -> None:
        with self._lock:
            self.spans_rejected[reason] += count

    def refuse(self, reason: str) -> None:
        """A request was answered retry-later (or closed), for one of ``REFUSALS``."""
        with self._lock:
            self.exports_refused[reason] += 1

    def stopped_readers(self, reason: str, count: int) -> None:
        """Reader queries were interrupted for the writer: "memory" (guard) or "writer" (exclusive)."""
        with self._lock:
            self.readers_stopped[reason] += count

    def limit_read(self, limit: str) -> None:
        """A query was stopped, refused or cut by the bound ``limit`` (see ``READ_LIMITS``)."""
        with self._lock:
            self.reads_limited[limit] += 1

    def cut(self, limit: str, count: int = 1) -> None:
        """Something was cut or refused by the setting ``limit`` (see ``LIMITS``)."""
        if count:
            with self._lock:
                self.limit_cuts[limit] += count


# The settings (and fixed bounds) whose cuts are counted, each always exported (0 until something is cut).
LIMITS = (
    "max_message_mib",
    "max_value_length",
    "max_properties",
    "max_span_attributes",
    "max_property_keys",
    "max_dimension_values",
    "receive_timeout_seconds",
    "request_head_bytes",
    "gzip_members",
    "coverage_scopes",
    "coverage_keys",
    "framework_candidates",
)
# queue_full, workers_busy: exports; connections_full, bodies_full: requests to either HTTP listener;
# lake_lag: exports while the lake lags past lake_max_lag (store/shipper.py).
REFUSALS = ("queue_full", "workers_busy", "connections_full", "bodies_full", "lake_lag")
# The read path's bounds: settings, and fixed bounds of SQL (sql_bounds.py, safe_sql.py).
READ_LIMITS = (
    "query_timeout_seconds",
    "sql_timeout_seconds",
    "sql_max_concurrent",
    "sql_max_result_mib",
    "sql_text_bytes",
    "sql_complexity",
    "sql_files",
)
