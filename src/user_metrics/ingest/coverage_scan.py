"""What the coverage report learns from the spans the mapper reads: pure, one Export request at a time.

The mapper (``mapping.py``) calls ``Tally.saw`` for each span and ``Tally.stored`` for each record
it returns. Per (service, instrumentation scope) a ``ScopeTally`` counts the LLM spans mapped, the
spans that were not counted but look like LLM calls (``conventions.LLM_LIKE_*``; never those named in
``conventions.NOT_CALL_SPAN_NAMES``) with their names
and attribute keys, and the attribute keys of LLM spans that no convention reads (``Scan.unread``,
collected in the mapper's one pass over the attributes). The ingestor hands the tallies to the
service's bounded counters (``coverage_counts.py``). ``stored`` also puts the scope on the record.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

from user_metrics.ingest import conventions as c
from user_metrics.ingest.attributes import Scan
from user_metrics.store.records import RequestRecord

ScopeKey = tuple[str | None, str | None, str | None]  # service name, scope name, scope version

_LLM_LIKE_KEY = re.compile(
    "(?:{})[^\\n]*?(?:{})".format(
        "|".join(map(re.escape, c.LLM_LIKE_PREFIXES)), "|".join(map(re.escape, c.LLM_LIKE_WORDS))
    )
)


class ScopeTally:
    """One request's spans of one (service, scope)."""

    __slots__ = ("key", "llm_spans", "llm_like_skipped", "skipped_names", "_skipped_keys", "_unread")

    def __init__(self, key: ScopeKey) -> None:
        self.key = key
        self.llm_spans = 0
        self.llm_like_skipped = 0
        self.skipped_names: Counter[str] = Counter()
        self._skipped_keys: Counter[str] = Counter()
        self._unread: list[str] = []  # counted once, when read (cheaper than per span)

    @property
    def skipped_keys(self) -> Counter[str]:
        """The skipped LLM-looking spans' keys (numbered segments as ``*``): spans with each."""
        return _numbers_as_stars(self._skipped_keys)

    @property
    def unread_keys(self) -> Counter[str]:
        """Keys of LLM spans that no convention reads (numbered segments as ``*``): occurrences."""
        return _numbers_as_stars(Counter(self._unread))


# A numbered segment of a key: OpenInference's `llm.input_messages.3.message.content`.
_INDEX = re.compile(r"\.[0-9]+(?=\.|$)")


def _numbers_as_stars(counts: Counter[str]) -> Counter[str]:
    """One key for every index of a list flattened into keys (`llm.input_messages.*.message.role`)."""
    out: Counter[str] = Counter()
    for key, count in counts.items():
        out[_INDEX.sub(".*", key)] += count
    return out


# Where the scope sits in a record (the last two fields), to set it without ``_replace``'s cost.
_SCOPE_AT = RequestRecord._fields.index("scope_name")
assert RequestRecord._fields[_SCOPE_AT : _SCOPE_AT + 2] == ("scope_name", "scope_version")


def looks_like_llm(scan: Scan, declared: str | None) -> bool:
    """Whether a span the rules did not count looks like an LLM call (see conventions)."""
    if declared is not None and declared in c.NON_MODEL_OPERATIONS:
        return False  # skipped on purpose: an agent, tool or workflow span
    hits = scan.hits
    if any(name in hits for name in c.LLM_LIKE_FIELDS):
        return True
    match = _LLM_LIKE_KEY.match
    return any(match(key) for key in scan.unread)


class Tally:
    """The coverage facts of one Export request, by (service, scope)."""

    __slots__ = ("scopes", "_llm_scope")

    def __init__(self) -> None:
        self.scopes: dict[ScopeKey, ScopeTally] = {}  # in the order the scopes were first seen
        self._llm_scope: dict[int, ScopeTally] = {}  # id() of an LLM span the mapper holds -> its scope

    def scope(self, scope: Any, service_name: str | None, limit: int) -> ScopeTally:
        """The tally of an OTLP ``InstrumentationScope`` (name and version cut to ``limit``)."""
        key = (service_name, scope.name[:limit] or None, scope.version[:limit] or None)
        tally = self.scopes.get(key)
        if tally is None:
            tally = self.scopes[key] = ScopeTally(key)
        return tally

    def saw(self, span: Any, scan: Scan, tally: ScopeTally, is_llm: bool, declared: str | None) -> None:
        """One span of the scope was read: an LLM call (remember its scope) or skipped."""
        if is_llm:
            self._llm_scope[id(span)] = tally
        elif span.name not in c.NOT_CALL_SPAN_NAMES and looks_like_llm(scan, declared):
            tally.llm_like_skipped += 1
            tally.skipped_names[span.name] += 1
            tally._skipped_keys.update(_keys(scan))

    def stored(self, record: RequestRecord, span: Any, scan: Scan) -> RequestRecord:
        """The record of an LLM span ``saw`` was given, with its scope; its unread keys counted."""
        tally = self._llm_scope.get(id(span))
        if tally is None:
            return record
        tally.llm_spans += 1
        if scan.unread:
            tally._unread.extend(scan.unread)
        at = _SCOPE_AT
        return RequestRecord._make(record[:at] + tally.key[1:] + record[at + 2 :])


def _keys(scan: Scan) -> set[str]:
    """Every attribute key the scan read (within max_span_attributes), each once."""
    keys = {key for bucket in scan.hits.values() for _target, key, _value in bucket}
    keys.update(key for key, _value in scan.prefixed)
    keys.update(key for key, _value in scan.bare)
    keys.update(scan.unread)
    return keys
