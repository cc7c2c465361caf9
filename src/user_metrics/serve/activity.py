"""A periodic info line while spans arrive, so an operator watching the log sees the service work.

Once a minute (by default), if spans arrived since the last line, ``ActivityLog`` logs what the
service took in since then, from its ``Stats``, and how many users the database knows. An idle
service logs nothing.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

import duckdb

from user_metrics.query.users import count_stored_users
from user_metrics.stats import Stats

log = logging.getLogger("user_metrics")

INTERVAL_SECONDS = 60.0


@dataclass(frozen=True)
class _Counts:
    received: int
    stored: int
    duplicate: int
    rejected: int
    skipped: int

    @classmethod
    def of(cls, stats: Stats) -> _Counts:
        return cls(
            stats.spans_received,
            stats.spans_stored,
            stats.spans_duplicate,
            sum(stats.spans_rejected.values()),
            stats.spans_skipped,
        )


def count_users(open_reader: Callable[[], duckdb.DuckDBPyConnection]) -> int:
    """Distinct user ids stored so far (``count_stored_users`` on a reader of its own)."""
    con = open_reader()
    try:
        return count_stored_users(con)
    finally:
        con.close()


class ActivityLog:
    """A daemon thread logging one line per ``interval`` seconds in which spans arrived."""

    def __init__(self, stats: Stats, users: Callable[[], int], interval: float = INTERVAL_SECONDS) -> None:
        """``users`` counts the users in the database (called only for a line that is logged)."""
        self._stats = stats
        self._users = users
        self.interval = interval
        self._last = _Counts.of(stats)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="activity-log", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread (at once: a pending line is not written; the stop line says it all)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.log_once()

    def log_once(self) -> None:
        """Log the counts since the last line, if any changed (spans arrived, or were stored after
        the last line); never raises."""
        now = _Counts.of(self._stats)
        if now == self._last:
            return
        last, self._last = self._last, now
        try:
            users: int | str = self._users()
        except Exception as exc:  # noqa: BLE001 - a line without the count beats no line
            log.debug("activity log: cannot count users: %s", exc)
            users = "?"
        log.info(
            "last %.0f s: %d spans received, %d requests stored, %d duplicates ignored, %d rejected, "
            "%d not LLM calls; %s users in the database",
            self.interval,
            now.received - last.received,
            now.stored - last.stored,
            now.duplicate - last.duplicate,
            now.rejected - last.rejected,
            now.skipped - last.skipped,
            users,
        )
