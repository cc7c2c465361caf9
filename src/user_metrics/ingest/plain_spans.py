"""Plain spans in the mapping: what the split (``span_split.py``) reduced to 40-byte id records.

A plain span carries nothing the mapper reads, so mapping it gives the same every time: it is
skipped, leaves an empty identity whose parent link LLM spans of its request may walk through, and
a ``span_facts`` row with its ids alone. ``map_request`` is given the records (``PlainSpans``) beside
the candidate spans and must map the pair exactly as it maps the whole request; this module keeps
that cheap, without a Python object per plain span:

- ``Identities`` is the mapper's identity dict, completed by the plain spans: their index (24 bytes
  of ids -> record) is built at the first lookup only, and a key present among candidates and
  plain spans resolves to the later span of the request (``ordinal``), as the dict would.
- ``PlainFacts`` is what they leave in ``span_facts``: the records, whose rows
  ``store/batches.plain_facts_table`` builds with numpy and Arrow, and the LLM facts of a key whose last span
  is a plain one (a duplicate id), which land on that plain row as they would.

The record's parent is 8 zero bytes when the span has none. A span whose parent is 8 zero bytes
is never plain (the splitter leaves it a candidate), so the two cannot be confused.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from user_metrics.ingest.inheritance import Identity

RECORD_SIZE = 40
_ORDINAL_AT = 32
_NO_PARENT = bytes(8)

Key = tuple[bytes, bytes]
LlmFact = tuple[str, str, "str | None"]  # llm, model, absorbed_by (SpanFact's last fields)


class PlainSpans(NamedTuple):
    """The split's plain spans of one request: the records, and the attributes they did not read."""

    records: bytes
    dropped_attributes: int = 0

    @property
    def size(self) -> int:
        return len(self.records) // RECORD_SIZE


class PlainFacts(NamedTuple):
    """What the plain spans leave in ``span_facts``: their records and LLM facts by record index."""

    records: bytes
    llm: dict[int, LlmFact]


class Identities(dict[Key, Identity]):
    """(trace_id, span_id) -> Identity of every span of a request; the mapper fills in the
    candidates' own, the plain spans' (empty) ones are read from their records when looked up."""

    def __init__(self, plain: PlainSpans, candidates: Any) -> None:
        super().__init__()
        self._records = plain.records
        self._candidates = candidates  # the candidates' request, for their ordinals (duplicates only)
        self._index: dict[bytes, int] | None = None
        self.llm: dict[int, LlmFact] = {}

    def get(self, key: Key, default: Any = None) -> Any:
        own = dict.get(self, key)
        at = self._plain_at(key)
        if at is None or (own is not None and self._candidate_later(key, at)):
            return default if own is None else own
        parent = self._records[at * RECORD_SIZE + 24 : at * RECORD_SIZE + 32]
        return Identity(None, None, {}, b"" if parent == _NO_PARENT else parent)

    def __contains__(self, key: object) -> bool:
        return self.get(key) is not None  # type: ignore[arg-type]

    def llm_on_plain(self, key: Key, fact: LlmFact) -> bool:
        """Put an LLM span's facts on the plain span of its key when that is the key's last span."""
        at = self._plain_at(key)
        if at is None or (dict.__contains__(self, key) and self._candidate_later(key, at)):
            return False
        self.llm[at] = fact
        return True

    def facts(self) -> PlainFacts:
        return PlainFacts(self._records, self.llm)

    def _plain_at(self, key: Key) -> int | None:
        trace_id, span_id = key
        if len(trace_id) != 16 or len(span_id) != 8:
            return None
        if self._index is None:
            records, size = self._records, RECORD_SIZE
            # Later records overwrite earlier ones: the last span of a key wins, as in the dict.
            self._index = {records[i : i + 24]: i // size for i in range(0, len(records), size)}
        return self._index.get(trace_id + span_id)

    def _candidate_later(self, key: Key, at: int) -> bool:
        """Whether the key's last candidate span comes after plain record ``at`` in the request."""
        return _last_candidate_ordinal(self._candidates, self._records, key) > _ordinal(self._records, at)


def _ordinal(records: bytes, at: int) -> int:
    """Plain record ``at``'s place among all spans of its request."""
    return int.from_bytes(
        records[at * RECORD_SIZE + _ORDINAL_AT : at * RECORD_SIZE + _ORDINAL_AT + 4], "little"
    )


def _last_candidate_ordinal(candidates: Any, records: bytes, key: Key) -> int:
    """The ordinal of the last candidate span with ``key`` (-1 if none): candidates take the
    places that plain spans do not, in order. Only duplicate ids get here."""
    plain = {_ordinal(records, at) for at in range(len(records) // RECORD_SIZE)}
    last, ordinal = -1, -1
    spans = (s for r in candidates.resource_spans for scope in r.scope_spans for s in scope.spans)
    for span in spans:
        ordinal += 1
        while ordinal in plain:
            ordinal += 1
        if (span.trace_id, span.span_id) == key:
            last = ordinal
    return last
