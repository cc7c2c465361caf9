"""The property-key budget (``max_property_keys``): which property keys records may bring into the store."""

from __future__ import annotations

import threading
from collections.abc import Iterable

from user_metrics.store.records import RequestRecord


class PropertyKeyBudget:
    """Admits at most ``limit`` distinct property keys into the database, for good.

    Keys already stored always pass (also when the limit was lowered since); a new key is
    admitted while there is room. Properties with keys that are refused are dropped from the
    record, which is otherwise stored. ``known`` comes from the store at start-up.
    """

    def __init__(self, known: Iterable[str], limit: int) -> None:
        self._known = set(known)
        self._limit = limit
        self._lock = threading.Lock()

    def admit(self, records: list[RequestRecord]) -> tuple[list[RequestRecord], int]:
        """The records with properties of refused keys removed, and how many were removed."""
        known = self._known
        if all(key in known for record in records for key in record.properties):
            return records, 0
        dropped = 0
        out = []
        with self._lock:
            for record in records:
                kept = {}
                for key, value in record.properties.items():
                    if key not in known and len(known) < self._limit:
                        known.add(key)
                    if key in known:
                        kept[key] = value
                    else:
                        dropped += 1
                out.append(
                    record if len(kept) == len(record.properties) else record._replace(properties=kept)
                )
        return out, dropped
