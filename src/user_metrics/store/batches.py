"""The Arrow tables the store takes: request records in the order of the ``requests`` table, and
the spans' identity facts as rows of ``span_facts``.

Plain spans (``ingest/plain_spans.py``: spans the native split reduced to 40-byte id records)
leave rows with their ids alone, built by ``plain_facts_table`` without a Python loop: trace, span
and parent id as lower-case hex (one ``bytes.hex`` of all records, cut into columns by numpy), no
user, session or property,
and LLM facts only where an LLM span's duplicate id made the plain span its key's last span. Same
schema and values as ``facts_table``, so the two tables concatenate."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import chain

import numpy as np
import pyarrow as pa

from user_metrics.store.records import RequestRecord, SpanFact
from user_metrics.store.schema import SPLIT_COLUMNS

COST_TYPE = pa.decimal128(18, 9)

REQUESTS_ARROW_SCHEMA = pa.schema(
    [
        ("trace_id", pa.string()),
        ("span_id", pa.string()),
        ("parent_span_id", pa.string()),
        ("start_time", pa.timestamp("us", tz="UTC")),
        ("duration_ms", pa.float64()),
        ("user_id", pa.string()),
        ("session_id", pa.string()),
        ("service_name", pa.string()),
        ("environment", pa.string()),
        ("operation", pa.string()),
        ("provider", pa.string()),
        ("request_model", pa.string()),
        ("response_model", pa.string()),
        ("input_tokens", pa.int64()),
        ("output_tokens", pa.int64()),
        ("cache_read_tokens", pa.int64()),
        ("cache_write_tokens", pa.int64()),
        ("reasoning_tokens", pa.int64()),
        ("cost_usd", COST_TYPE),
        ("cost_source", pa.string()),
        ("status", pa.string()),
        ("error_type", pa.string()),
        ("streaming", pa.bool_()),
        ("properties", pa.map_(pa.string(), pa.string())),
        ("cache_added_to_input", pa.bool_()),
        ("price_provider", pa.string()),
        ("scope_name", pa.string()),
        ("scope_version", pa.string()),
        *((name, COST_TYPE) for name in SPLIT_COLUMNS),
    ]
)

# RequestRecord fields copied as they are, in schema order (start_time and cost are converted).
_DIRECT = {name for name in RequestRecord._fields} - {"start_time_unix_nano", "cost_usd", "cost_source"}


def nanos_to_decimal_array(nanos: Sequence[int | None]) -> pa.Array:
    """Nano-dollar integers as a DECIMAL(18,9) array, exactly (no float, no Decimal objects)."""
    n = len(nanos)
    valid = np.fromiter((v is not None for v in nanos), dtype=bool, count=n)
    low = np.fromiter((v if v is not None else 0 for v in nanos), dtype=np.int64, count=n)
    return _decimals(low, valid)


def _decimals(low: np.ndarray, valid: np.ndarray) -> pa.Array:
    """int64 nano-dollars (valid where ``valid``) as a DECIMAL(18,9) array."""
    n = len(low)
    words = np.empty((n, 2), dtype=np.int64)  # little-endian 128-bit two's complement
    words[:, 0] = low
    words[:, 1] = np.where(low < 0, -1, 0)
    validity = None if valid.all() else pa.py_buffer(np.packbits(valid, bitorder="little").tobytes())
    return pa.Array.from_buffers(COST_TYPE, n, [validity, pa.py_buffer(words.tobytes())])


def to_arrow(
    records: Sequence[RequestRecord],
    costs: Sequence[int | None],
    sources: Sequence[str],
    price_providers: Sequence[str | None] | None = None,
    splits: Sequence[Sequence[int] | None] | None = None,
) -> pa.Table:
    """Build the Arrow table for ``requests`` from mapped records and their prices.

    ``price_providers``: the provider whose price list billed each record (None: all NULL).
    ``splits``: each record's cost per bucket in nano-dollars, in the order of ``SPLIT_COLUMNS``,
    or None (None: all NULL).
    """
    if not records:
        return REQUESTS_ARROW_SCHEMA.empty_table()
    columns = dict(zip(RequestRecord._fields, zip(*records, strict=True), strict=True))
    split_arrays = _split_arrays(splits, len(records))
    arrays = []
    for field in REQUESTS_ARROW_SCHEMA:
        name = field.name
        if name == "start_time":
            micros = np.fromiter(columns["start_time_unix_nano"], dtype=np.int64, count=len(records)) // 1000
            arrays.append(pa.array(micros, type=field.type))
        elif name == "cost_usd":
            arrays.append(nanos_to_decimal_array(costs))
        elif name == "cost_source":
            arrays.append(pa.array(sources, type=field.type))
        elif name == "price_provider":
            arrays.append(
                pa.array(price_providers, type=field.type)
                if price_providers is not None
                else pa.nulls(len(records), field.type)
            )
        elif name in split_arrays:
            arrays.append(split_arrays[name])
        elif name == "properties":
            arrays.append(pa.array([list(p.items()) for p in columns[name]], type=field.type))
        else:
            assert name in _DIRECT
            arrays.append(pa.array(columns[name], type=field.type))
    return pa.Table.from_arrays(arrays, schema=REQUESTS_ARROW_SCHEMA)


_NO_SPLIT = (0,) * len(SPLIT_COLUMNS)


def _split_arrays(splits: Sequence[Sequence[int] | None] | None, n: int) -> dict[str, pa.Array]:
    """The cost-per-bucket columns: one DECIMAL(18,9) array per bucket (one numpy pass for all)."""
    if splits is None or not any(splits):
        return {name: pa.nulls(n, COST_TYPE) for name in SPLIT_COLUMNS}
    valid = np.fromiter((s is not None for s in splits), dtype=bool, count=n)
    flat = chain.from_iterable(s if s is not None else _NO_SPLIT for s in splits)
    values = np.fromiter(flat, dtype=np.int64, count=n * len(SPLIT_COLUMNS)).reshape(n, len(SPLIT_COLUMNS))
    return {
        name: _decimals(np.ascontiguousarray(values[:, i]), valid) for i, name in enumerate(SPLIT_COLUMNS)
    }


FACTS_SCHEMA = pa.schema(
    [
        ("trace_id", pa.string()),
        ("span_id", pa.string()),
        ("parent_span_id", pa.string()),
        ("user_id", pa.string()),
        ("session_id", pa.string()),
        ("properties", pa.map_(pa.string(), pa.string())),
        ("seen_us", pa.int64()),
        ("llm", pa.string()),
        ("model", pa.string()),
        ("absorbed_by", pa.string()),
    ]
)


def facts_table(facts: list[SpanFact], seen_us: int) -> pa.Table:
    """The spans' identity facts as rows of ``span_facts``."""
    columns = list(zip(*facts, strict=True))
    return pa.table(
        [
            *(pa.array(columns[i], pa.string()) for i in range(5)),
            pa.array([list(p.items()) for p in columns[5]], FACTS_SCHEMA.field("properties").type),
            pa.array([seen_us] * len(facts), pa.int64()),
            *(pa.array(columns[i], pa.string()) for i in range(6, 9)),
        ],
        schema=FACTS_SCHEMA,
    )


# ---- plain spans' facts: ids alone, from the split's 40-byte records (ingest/plain_spans.py) ----

PLAIN_RECORD_SIZE = 40  # trace_id[16] span_id[8] parent[8] ordinal:u32le count:u32le

LlmFacts = dict[int, tuple[str, str, "str | None"]]  # record index -> llm, model, absorbed_by


def _hex_strings(hexed: np.ndarray, valid: np.ndarray | None = None) -> pa.Array:
    """Arrow strings of the rows of a matrix of hex digits (nulls where ``valid`` is False)."""
    n, width = hexed.shape
    offsets = np.arange(0, (n + 1) * width, width, dtype=np.int32)
    bitmap = None if valid is None else pa.py_buffer(np.packbits(valid, bitorder="little").tobytes())
    nulls = 0 if valid is None else int(n - np.count_nonzero(valid))
    data = pa.py_buffer(np.ascontiguousarray(hexed).tobytes())
    return pa.Array.from_buffers(pa.string(), n, [bitmap, pa.py_buffer(offsets), data], nulls)


def plain_facts_table(records: bytes, llm: LlmFacts, seen_us: int) -> pa.Table:
    """The plain spans' rows of ``span_facts``; ``llm``: the LLM facts of some, by record index."""
    n = len(records) // PLAIN_RECORD_SIZE
    hexed = np.frombuffer(records.hex().encode("ascii"), dtype=np.uint8).reshape(n, 2 * PLAIN_RECORD_SIZE)
    parent = np.frombuffer(records, dtype=np.uint64).reshape(n, PLAIN_RECORD_SIZE // 8)[:, 3]
    empty = pa.MapArray.from_arrays(
        pa.array(np.zeros(n + 1, dtype=np.int32)),
        pa.array([], pa.string()),
        pa.array([], pa.string()),
        type=FACTS_SCHEMA.field("properties").type,
    )
    last = [pa.nulls(n, pa.string()) for _ in range(3)]  # llm, model, absorbed_by
    if llm:
        values: list[list[str | None]] = [[None] * n for _ in range(3)]
        for at, fact in llm.items():
            for column, value in zip(values, fact, strict=True):
                column[at] = value
        last = [pa.array(column, pa.string()) for column in values]
    return pa.table(
        [
            _hex_strings(hexed[:, :32]),
            _hex_strings(hexed[:, 32:48]),
            _hex_strings(hexed[:, 48:64], parent != 0),
            pa.nulls(n, pa.string()),
            pa.nulls(n, pa.string()),
            empty,
            pa.array(np.full(n, seen_us, dtype=np.int64)),
            *last,
        ],
        schema=FACTS_SCHEMA,
    )
