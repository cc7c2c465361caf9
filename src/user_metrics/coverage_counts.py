"""The coverage report's live part, since the service started: per service and instrumentation
scope, the spans that look like LLM calls but were not counted (their names and attribute keys),
and the attribute keys of stored LLM spans that no convention reads. Thread-safe and bounded.

The ingestor adds each Export's tally (``ingest/coverage_scan.py``); ``GET /api/v1/coverage``
and ``/metrics`` read a ``snapshot``. It lives here, beside ``stats.py``, because both the
ingest side and the readers reach it and neither may import the other.

Bounds, each counted in ``user_metrics_limit_cuts_total``:
- at most ``max_scopes`` (service, scope name, scope version) entries (the ``metrics_max_values``
  setting), the first seen; spans of later ones are counted in one ``(other)`` entry
  (``limit="coverage_scopes"``, one per span);
- at most ``MAX_KEYS`` distinct keys (or span names) per list of an entry and ``MAX_KEYS_TOTAL``
  in all lists together, keys of at most ``MAX_KEY_LENGTH`` characters; any other key's
  occurrences are counted under ``(other)`` in its list (``limit="coverage_keys"``, one per
  occurrence).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from user_metrics.stats import Stats

OTHER = "(other)"
MAX_KEYS = 1000
MAX_KEYS_TOTAL = 20_000
MAX_KEY_LENGTH = 256

# (service name, scope name, scope version); None where the span's request did not say.
ScopeKey = tuple[str | None, str | None, str | None]
OTHER_SCOPE: ScopeKey = (OTHER, OTHER, None)


class Tally(Protocol):
    """What one Export request's spans of one scope added (``ingest/coverage_scan.ScopeTally``)."""

    @property
    def llm_spans(self) -> int: ...
    @property
    def llm_like_skipped(self) -> int: ...
    @property
    def skipped_names(self) -> Counter[str]: ...
    @property
    def skipped_keys(self) -> Counter[str]: ...
    @property
    def unread_keys(self) -> Counter[str]: ...


@dataclass
class ScopeCounts:
    """One (service, scope) entry: counts since the start, and its bounded key lists."""

    llm_spans: int = 0  # LLM spans mapped to a record (re-sent ones again)
    llm_like_skipped: int = 0  # spans not counted that look like LLM calls
    unread_total: int = 0  # occurrences of attribute keys no convention reads, on LLM spans
    skipped_names: Counter[str] = field(default_factory=Counter)
    skipped_keys: Counter[str] = field(default_factory=Counter)
    unread_keys: Counter[str] = field(default_factory=Counter)


@dataclass(frozen=True)
class CoverageSnapshot:
    started_unix: float  # when counting began (the service's start)
    scopes: dict[ScopeKey, ScopeCounts]  # copies


class CoverageCounts:
    """The bounded live counters; ``add`` per Export, ``snapshot`` per reader."""

    def __init__(self, stats: Stats, max_scopes: int = 100, clock: float | None = None) -> None:
        self._stats = stats
        self._max_scopes = max_scopes
        self._scopes: dict[ScopeKey, ScopeCounts] = {}
        self._keys = 0  # distinct keys held in all lists
        self._lock = threading.Lock()
        self.started_unix = time.time() if clock is None else clock

    def add(self, tallies: Mapping[ScopeKey, Tally]) -> None:
        """Add one request's tallies, within the bounds (cuts counted in ``stats``)."""
        scope_cuts = key_cuts = 0
        with self._lock:
            for key, tally in tallies.items():
                if not (tally.llm_spans or tally.llm_like_skipped):
                    continue  # a scope whose spans were all skipped, none LLM-looking
                entry = self._scopes.get(key)
                if entry is None:
                    if len(self._scopes) < self._max_scopes:
                        entry = self._scopes[key] = ScopeCounts()
                    else:
                        scope_cuts += tally.llm_spans + tally.llm_like_skipped
                        entry = self._scopes.setdefault(OTHER_SCOPE, ScopeCounts())
                entry.llm_spans += tally.llm_spans
                entry.llm_like_skipped += tally.llm_like_skipped
                unread = tally.unread_keys
                entry.unread_total += unread.total()
                key_cuts += self._merge(entry.unread_keys, unread)
                key_cuts += self._merge(entry.skipped_names, tally.skipped_names)
                key_cuts += self._merge(entry.skipped_keys, tally.skipped_keys)
        self._stats.cut("coverage_scopes", scope_cuts)
        self._stats.cut("coverage_keys", key_cuts)

    def _merge(self, held: Counter[str], new: Counter[str]) -> int:
        """Add ``new`` to ``held``; occurrences of keys beyond the bounds go to (other). The cuts."""
        cut = 0
        for key, count in new.items():
            if key in held:
                held[key] += count
            elif len(held) < MAX_KEYS and self._keys < MAX_KEYS_TOTAL and len(key) <= MAX_KEY_LENGTH:
                held[key] = count
                self._keys += 1
            else:
                held[OTHER] += count
                cut += count
        return cut

    def snapshot(self) -> CoverageSnapshot:
        with self._lock:
            scopes = {
                key: ScopeCounts(
                    e.llm_spans,
                    e.llm_like_skipped,
                    e.unread_total,
                    Counter(e.skipped_names),
                    Counter(e.skipped_keys),
                    Counter(e.unread_keys),
                )
                for key, e in self._scopes.items()
            }
        return CoverageSnapshot(self.started_unix, scopes)
