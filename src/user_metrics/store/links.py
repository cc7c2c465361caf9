"""Parent links: the span facts of spans that carry nothing to inherit, stored as integers.

Most spans an application sends are not LLM calls and carry no identity (every HTTP or database
span): their fact says only "this span's parent is that one", which a later LLM span needs to walk
up to an ancestor with a user. Such a fact (no user, session or properties, not an LLM span) goes
to ``span_links`` instead of ``span_facts``: the trace id as two UBIGINTs, the span and parent ids
as UBIGINT (NULL: a root), and when it was seen. ``split`` takes them out of a facts table with
numpy over the ids' bytes (no Python per row). Only ids in the mapper's spelling (lower-case hex,
32 and 16 digits) become links, so turning them back into text (``facts_sql``) gives the same
strings; any other fact stays in ``span_facts`` as it is. Readers see both tables as one through
``facts_sql``, so attribution computes what it did with every fact in ``span_facts``. Old links
are dropped with the old facts (``attribution.purge_facts``), by a DELETE on their integer
``seen_us``.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

DDL = """CREATE TABLE IF NOT EXISTS span_links (
    trace_hi UBIGINT NOT NULL, trace_lo UBIGINT NOT NULL, span UBIGINT NOT NULL, parent UBIGINT,
    seen_us BIGINT NOT NULL
)"""

SCHEMA = pa.schema(
    [
        ("trace_hi", pa.uint64()),
        ("trace_lo", pa.uint64()),
        ("span", pa.uint64()),
        ("parent", pa.uint64()),
        ("seen_us", pa.int64()),
    ]
)

_IDENTITY = ("user_id", "session_id", "llm", "model", "absorbed_by")


def split(facts: pa.Table) -> tuple[pa.Table | None, pa.Table | None]:
    """(the facts that stay in ``span_facts``, the links for ``span_links``); None for an empty part."""
    n = facts.num_rows
    plain = np.ones(n, dtype=bool)
    for name in _IDENTITY:
        plain &= _null(facts[name])
    sizes = [np.diff(np.asarray(chunk.offsets)) for chunk in facts["properties"].chunks]
    plain &= _null(facts["properties"]) | (np.concatenate(sizes) == 0 if sizes else plain)
    plain &= _length(facts["trace_id"], 0) == 32
    plain &= _length(facts["span_id"], 0) == 16
    parent_null = _null(facts["parent_span_id"])
    plain &= parent_null | (_length(facts["parent_span_id"], 16) == 16)
    if not plain.any():
        return facts, None
    rows = np.flatnonzero(plain)
    picked = pa.array(rows) if len(rows) < n else None
    trace, trace_ok = _ids(_take(facts["trace_id"], picked), 32)
    span, span_ok = _ids(_take(facts["span_id"], picked), 16)
    parent, parent_ok = _ids(pc.fill_null(_take(facts["parent_span_id"], picked), "0" * 16), 16)
    ok = trace_ok & span_ok & parent_ok
    plain[rows[~ok]] = False  # not the mapper's spelling: kept as text
    seen = _take(facts["seen_us"], picked).to_numpy()
    if not ok.all():
        trace, span, parent, seen = trace[ok], span[ok], parent[ok], seen[ok]
    links = pa.table(
        [
            pa.array(trace[:, 0]),
            pa.array(trace[:, 1]),
            pa.array(span[:, 0]),
            pa.array(parent[:, 0], mask=parent_null[plain]),
            pa.array(seen),
        ],
        schema=SCHEMA,
    )
    rest = facts.filter(pa.array(~plain)) if not plain.all() else None
    return rest, links


def facts_sql(traces: str) -> str:
    """A relation of every fact (``span_facts``' columns) of the traces ``traces`` selects (a
    query with one column, ``trace_id``): those in ``span_facts`` and the links as text."""
    return f"""SELECT trace_id, span_id, parent_span_id, user_id, session_id, properties, seen_us,
                  llm, model, absorbed_by
           FROM span_facts WHERE trace_id IN ({traces})
           UNION ALL
           SELECT printf('%016x%016x', trace_hi, trace_lo), printf('%016x', span),
                  CASE WHEN parent IS NOT NULL THEN printf('%016x', parent) END,
                  NULL::VARCHAR, NULL::VARCHAR, NULL::MAP(VARCHAR, VARCHAR), seen_us,
                  NULL::VARCHAR, NULL::VARCHAR, NULL::VARCHAR
           FROM span_links
           WHERE (trace_hi, trace_lo) IN (
               SELECT (TRY_CAST('0x' || trace_id[1:16] AS UBIGINT),
                       TRY_CAST('0x' || trace_id[17:32] AS UBIGINT))
               FROM ({traces}) WHERE length(trace_id) = 32)"""


def _take(column: pa.ChunkedArray, rows: pa.Array | None) -> pa.ChunkedArray:
    return column if rows is None else column.take(rows)


def _null(column: pa.ChunkedArray) -> np.ndarray:
    if column.null_count == len(column):
        return np.ones(len(column), dtype=bool)
    return pc.is_null(column).to_numpy(zero_copy_only=False)


def _length(column: pa.ChunkedArray, default: int) -> np.ndarray:
    return pc.fill_null(pc.binary_length(column), default).to_numpy(zero_copy_only=False)


def _ids(column: pa.ChunkedArray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Strings all ``width`` (16 or 32) hex digits long as integers, an (n, width / 16) uint64
    array; and which rows are lower-case hex throughout (the others' integers mean nothing).
    Eight digits at a time in a uint64 (SWAR): numpy makes a few passes over 2n or 4n words."""
    array = column.combine_chunks()
    kind = np.int64 if pa.types.is_large_string(array.type) else np.int32
    offsets = np.frombuffer(array.buffers()[1], dtype=kind)[array.offset : array.offset + len(array) + 1]
    data = np.frombuffer(array.buffers()[2], dtype=np.uint8)[offsets[0] : offsets[-1]]
    x = data.copy().view("<u8").reshape(len(array), width // 8)  # digit i of a word in byte i
    v = (x & _LOW) + _NINE * ((x >> _SIX) & _ONE)  # each byte's digit, if it is one
    canonical = v + _ZERO + _TEN_TO_A * (((v + _SIX * _ONE) & _SIXTEEN) >> _FOUR)
    ok = ((canonical == x) & ((v & _HIGH) == 0)).all(axis=1)
    v = v.byteswap()  # the first digit in the top byte
    v = (v | (v >> _FOUR)) & np.uint64(0x00FF00FF00FF00FF)
    v = (v | (v >> np.uint64(8))) & np.uint64(0x0000FFFF0000FFFF)
    v = (v | (v >> np.uint64(16))) & np.uint64(0x00000000FFFFFFFF)
    return (v[:, 0::2] << np.uint64(32)) | v[:, 1::2], ok


_ONE = np.uint64(0x0101010101010101)  # one in every byte
_FOUR, _SIX, _NINE, _TEN_TO_A = np.uint64(4), np.uint64(6), np.uint64(9), np.uint64(ord("a") - ord("0") - 10)
_LOW, _HIGH, _ZERO, _SIXTEEN = 15 * _ONE, 0xF0 * _ONE, 0x30 * _ONE, 0x10 * _ONE
