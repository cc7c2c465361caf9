"""Fuzzing: the OTLP decoders, the mapper, the store path and the running receivers (Hypothesis).

Invariants checked on hostile input (random bytes, truncated or spliced protobuf with invalid UTF-8,
nesting beyond protobuf's recursion limit of 100, thousands of attributes, NUL characters, lone
surrogates in JSON, very long strings, hostile token counts, costs, timestamps and ids):

1. ``decode_protobuf`` / ``decode_json`` return an ``ExportTraceServiceRequest`` or raise
   ``InvalidInput``, never anything else.
2. ``map_request`` never raises; every record has token counts in ``[0, 2**63)``, text that is a
   valid ``str`` (UTF-8 encodable, no surrogates) within ``max_value_length``, at most
   ``max_properties`` properties and a start time; records, rejections and skipped spans account
   for every span (an LLM span repeated in one request counts once, as ``map_request`` does).
3. Whatever the mapper produces can be stored: an ``Ingestor`` on a real ``Store`` never answers
   ``Unavailable`` (exporters would retry such a batch forever) nor fails otherwise, and stores
   one row per new record.
4. End to end, against one running service: OTLP/HTTP answers 200, 400, 413 or 415 (with a body
   in the request's encoding) and gRPC OK, INVALID_ARGUMENT or RESOURCE_EXHAUSTED, whatever the
   body; afterwards ``/healthz`` answers and a known-good export is stored.

Profiles: "ci" (the default) is derandomized, so CI runs the same examples every time, and
bounded so that the file passes in well under a minute on two cores (a failing test takes longer:
Hypothesis shrinks the example first). "long" runs 20,000 examples per test (a share of that for
the slow ones) from random seeds, on demand:

    USER_METRICS_FUZZ_PROFILE=long .venv/bin/python -m pytest tests/ingest/test_fuzz.py -x

A failure prints the falsifying example (and a ``@reproduce_failure`` blob in the long profile).
"""

from __future__ import annotations

import copy
import gzip
import http.client
import json
import math
import os
import random
import re
import urllib.parse
import uuid
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import grpc
import pytest
from conftest import Service
from google.protobuf import json_format
from google.rpc import status_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status
from otlp import T0, chat, request, span, to_otlp_json

from user_metrics.errors import InvalidInput, Unavailable
from user_metrics.ingest import attributes, record_bounds
from user_metrics.ingest import conventions as c
from user_metrics.ingest.attributes import Conventions, compile_conventions, scan_attributes
from user_metrics.ingest.ingestor import Ingestor, decode_json, decode_protobuf
from user_metrics.ingest.mapping import MappedRequest, _declared_operation, _is_llm_call, map_request
from user_metrics.ingest.pricing import Pricer
from user_metrics.stats import Stats
from user_metrics.store.records import RequestRecord
from user_metrics.store.writer import Store

# ---- profiles -----------------------------------------------------------------------------------

_QUIET = [
    HealthCheck.too_slow,
    HealthCheck.data_too_large,
    HealthCheck.large_base_example,
    HealthCheck.filter_too_much,
    HealthCheck.function_scoped_fixture,
]
settings.register_profile(
    "ci",
    max_examples=120,
    deadline=None,
    derandomize=True,
    database=None,
    report_multiple_bugs=False,  # the first bug fails CI; shrinking one keeps a failing run short
    suppress_health_check=_QUIET,
)
settings.register_profile(
    "long",
    max_examples=20_000,
    deadline=None,
    derandomize=False,
    database=None,
    print_blob=True,
    suppress_health_check=_QUIET,
)
PROFILE = settings.get_profile(os.environ.get("USER_METRICS_FUZZ_PROFILE", "ci"))


def fuzz(share: float = 1.0) -> settings:
    """This file's profile (not loaded globally: other test files keep theirs), scaled for slow tests."""
    return settings(PROFILE, max_examples=max(1, int(PROFILE.max_examples * share)))


# ---- constants ----------------------------------------------------------------------------------

NOW = T0 + 3_600 * 10**9  # the clock of the mapper and the pipeline under test
DAY_NS = 86_400 * 10**9
U64_MAX = 2**64 - 1
I64_MIN, I64_MAX = -(2**63), 2**63 - 1
MAX_TOKENS, MAX_COST_USD = attributes.MAX_TOKENS, attributes.MAX_COST_USD  # the largest the mapper accepts
# 9999-12-31T23:59:59Z: in ns it is beyond uint64 (JSON only); in seconds or us it fits a fixed64.
YEAR_9999_S = 253_402_300_799
YEAR_9999_NS = YEAR_9999_S * 10**9
HEX = re.compile(r"[0-9a-f]*")

TEXT_FIELDS = record_bounds.TEXT_FIELDS  # the record fields that hold attribute text
TOKEN_FIELDS = tuple(c.TOKEN_FIELDS)

_PLAIN_SOURCES = {s.key for sources in c.FIELDS.values() for s in sources if s.json_key is None}
TOKEN_KEYS = sorted({s.key for f in c.TOKEN_FIELDS for s in c.FIELDS[f] if s.json_key is None})
COST_KEYS = sorted(s.key for s in c.FIELDS["cost"] if s.json_key is None)
MODEL_KEYS = sorted(
    {s.key for f in ("request_model", "response_model") for s in c.FIELDS[f] if s.json_key is None}
)
JSON_KEYS = sorted(
    {s.key for sources in c.FIELDS.values() for s in sources if s.json_key} | set(c.PROPERTY_JSON_KEYS)
)
OTHER_KEYS = sorted(_PLAIN_SOURCES - set(TOKEN_KEYS) - set(COST_KEYS) - set(MODEL_KEYS))
RESOURCE_KEYS = [c.SERVICE_NAME_KEY, *c.ENVIRONMENT_KEYS, "user.id", "session.id", "metadata"]

MODELS = ["gpt-4o", "gpt-4o-mini", "o3", "claude-3-5-sonnet-20241022", "gemini-1.5-pro", "no-such-model"]
PROVIDERS = ["openai", "anthropic", "az.ai.openai", "aws.bedrock", "gcp.gemini", " OpenAI ", ""]
OPERATIONS = [
    "chat",
    "CHAT",
    "text_completion",
    "embeddings",
    "generate_content",
    "invoke_agent",
    "tool",
    "x",
]

# ---- strategies: text and numbers ---------------------------------------------------------------

SPECIAL_TEXT = [
    "",
    "\x00",
    "a\x00b",
    "\x00" * 64,
    "\ufffd",
    "\U0001f600",
    "İ" * 3,  # lower() makes it longer
    "ß",
    "\u200b",
    " ",
    "NaN",
    "null",
    "{}",
    "[1]",
    "\\ud800",
    "x" * 5_000,
    "é" * 5_000,
    "\U0001f600" * 5_000,
    "y" * 20_000,
]
# Text protobuf accepts (no surrogates): random, special, and very long.
texts = st.one_of(
    st.text(max_size=24),
    st.sampled_from(SPECIAL_TEXT),
    st.builds(lambda s, n: s * n, st.text(min_size=1, max_size=8), st.integers(100, 1_000)),
)
SURROGATES = st.sampled_from(["\ud800", "\udbff", "\udc00", "\udfff"])
# Text only JSON can carry (as \udxxx escapes): lone surrogates mixed in.
json_texts = st.one_of(texts, st.lists(st.one_of(st.characters(), SURROGATES), max_size=12).map("".join))
int64s = st.one_of(
    st.sampled_from([0, 1, -1, 7, 2**31, 2**53 + 1, 2**62, I64_MAX, I64_MIN, 10**15, 10**16, 10**18]),
    st.integers(I64_MIN, I64_MAX),
)
floats = st.one_of(
    st.sampled_from(
        [
            0.0,
            -0.0,
            0.5,
            3.0,
            -3.0,
            1e15,
            1e16,
            1e19,
            2.0**63,
            2.0**63 - 1024,
            1e300,
            math.nan,
            math.inf,
            -math.inf,
        ]
    ),
    st.floats(),
)
COUNT_STRINGS = [
    "",
    " ",
    "0",
    "-0",
    "7",
    " 12 ",
    "1e3",
    "1E3",
    "2.5",
    "-1",
    "nan",
    "NaN",
    "inf",
    "-Infinity",
    "1e400",
    "9223372036854775807",
    "9223372036854775808",
    "18446744073709551615",
    "0x10",
    "1_000",
    "١٢٣",
    "12abc",
    "7\x00",
]
count_strings = st.one_of(
    st.sampled_from(COUNT_STRINGS), int64s.map(str), st.integers(-(2**70), 2**70).map(str), floats.map(repr)
)
COST_STRINGS = [
    "0",
    "-0",
    "0.000000001",
    "1e-30",
    "0.5",
    "999999999",
    "999999998.9999999999",
    "999999999.5",
    "1e9",
    "1E+8",
    "-1",
    "NaN",
    "sNaN",
    "Infinity",
    "1e999999999",
    "abc",
    "١٢٣",
]
cost_strings = st.one_of(st.sampled_from(COST_STRINGS), floats.map(repr))

# ---- strategies: JSON text (attribute values that hold JSON, and OTLP/JSON bodies) ---------------

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    floats,
    json_texts,
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(json_texts.map(lambda s: s[:16]), inner, max_size=4)
    ),
    max_leaves=10,
)
JSON_SPECIAL = [
    "[" * 5_000,
    '{"a":' * 3_000,
    "[" * 50 + "]" * 50,
    '{"user": "\\ud800"}',
    '{"\\udc00": "x", "plan": "\\ud800"}',
    '{"model": "\\udfff", "stream": true}',
    '{"input": NaN, "output": Infinity, "total": -Infinity}',
    '{"input": 1e999, "total": 1e999}',
    '{"input": 9223372036854775807, "output": 9223372036854775807, "total": 999999999}',
    '{"input": "12", "output": "x", "total": "0.5"}',
    '{"model": "' + "m" * 10_000 + '"}',
    '{"user": "' + "u" * 10_000 + '", "\\u0000": "\\u0000"}',
    '{"a": {"b": [1, {"c": 2}]}, "b": [1, 2], "C": null, "": "empty"}',
    "{",
    "",
    "NaN",
    "1" * 5_000,
]


@st.composite
def json_documents(draw: st.DrawFn) -> str:
    """JSON text with hostile content (what llm.invocation_parameters or metadata may hold)."""
    kind = draw(st.integers(0, 2))
    if kind == 0:
        return draw(st.sampled_from(JSON_SPECIAL))
    if kind == 1:
        doc = draw(
            st.fixed_dictionaries(
                {},
                optional={
                    k: st.one_of(json_scalars, count_strings)
                    for k in (
                        "user",
                        "model",
                        "stream",
                        "input",
                        "output",
                        "prompt_tokens",
                        "completion_tokens",
                        "total",
                    )
                },
            )
        )
        extra = draw(st.dictionaries(json_texts.map(lambda s: s[:16]), json_values, max_size=4))
        doc.update(extra)
        return json.dumps(doc)
    return json.dumps(draw(json_values))


# ---- strategies: OTLP protobuf messages ---------------------------------------------------------


def av(**kw: Any) -> AnyValue:
    return AnyValue(**kw)


def array_av(values: list[AnyValue]) -> AnyValue:
    out = AnyValue()
    out.array_value.values.extend(values)
    return out


def kvlist_av(items: list[tuple[str, AnyValue]]) -> AnyValue:
    out = AnyValue()
    out.kvlist_value.values.extend(KeyValue(key=k, value=v) for k, v in items)
    return out


scalar_values = st.one_of(
    texts.map(lambda s: av(string_value=s)),
    int64s.map(lambda i: av(int_value=i)),
    floats.map(lambda f: av(double_value=f)),
    st.booleans().map(lambda b: av(bool_value=b)),
    st.binary(max_size=24).map(lambda b: av(bytes_value=b)),
    st.just(AnyValue()),  # no value set
)
any_values = st.recursive(
    scalar_values,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4).map(array_av),
        st.lists(st.tuples(texts.map(lambda s: s[:16]), inner), max_size=4).map(kvlist_av),
    ),
    max_leaves=10,
)
count_values = st.one_of(
    int64s.map(lambda i: av(int_value=i)),
    floats.map(lambda f: av(double_value=f)),
    count_strings.map(lambda s: av(string_value=s)),
    st.booleans().map(lambda b: av(bool_value=b)),
    st.lists(int64s.map(lambda i: av(int_value=i)), max_size=2).map(array_av),
    st.just(AnyValue()),
)
cost_values = st.one_of(
    floats.map(lambda f: av(double_value=f)),
    st.integers(-(2**63), 2**63 - 1).map(lambda i: av(int_value=i)),
    cost_strings.map(lambda s: av(string_value=s)),
    st.booleans().map(lambda b: av(bool_value=b)),
)
json_attribute_values = st.one_of(json_documents().map(lambda s: av(string_value=s)), any_values)
property_names = st.one_of(
    st.sampled_from(["plan", "Plan", "PLAN", "user_id", "session_id", "", "İİ", "a" * 5_000]),
    texts.map(lambda s: s[:40]),
)


# Values known to be hard to read or to store, so that short runs meet them often.
NASTY_ATTRIBUTES: list[tuple[str, Any]] = [
    ("metadata", "[" * 5_000),
    ("llm.invocation_parameters", '{"user": "\\ud800", "model": "gpt-4o"}'),
    ("llm.invocation_parameters", '{"a": ' * 2_000),
    ("metadata", '{"plan": "\\udfff", "\\ud800": "x"}'),
    ("langfuse.observation.usage_details", '{"input": 9223372036854775807, "output": 1e18}'),
    ("langfuse.observation.cost_details", '{"total": 999999999}'),
    ("gen_ai.usage.input_tokens", 2**62),
    ("gen_ai.usage.input_tokens", I64_MAX),
    ("gen_ai.usage.output_tokens", 10**16),
    ("gen_ai.usage.output_tokens", 1e18),
    ("gen_ai.usage.input_tokens", "4611686018427387904"),
    ("gen_ai.usage.cache_read.input_tokens", I64_MAX),
    ("gen_ai.usage.cost", 999_999_999),
    ("gen_ai.usage.cost", "600000000.5"),
    ("user.id", "a\x00b"),
    ("property.nul", "\x00"),
    ("session.id", "s" * 10_000),
]


@st.composite
def attribute(draw: st.DrawFn) -> KeyValue:
    """One span attribute: a key the conventions know (with a value of its kind or not) or any key."""
    kind = draw(st.integers(0, 8))
    if kind == 8:
        key, python_value = draw(st.sampled_from(NASTY_ATTRIBUTES))
        return KeyValue(key=key, value=scalar_av(python_value))
    if kind == 0:
        key, value = draw(st.sampled_from(TOKEN_KEYS)), draw(count_values)
    elif kind == 1:
        key, value = draw(st.sampled_from(COST_KEYS)), draw(cost_values)
    elif kind == 2:
        key = draw(st.sampled_from(MODEL_KEYS))
        value = draw(st.one_of(st.sampled_from(MODELS).map(lambda m: av(string_value=m)), any_values))
    elif kind == 3:
        key, value = draw(st.sampled_from(JSON_KEYS)), draw(json_attribute_values)
    elif kind == 4:
        key = draw(st.sampled_from(c.PROPERTY_PREFIXES)) + draw(property_names)
        value = draw(any_values)
    elif kind == 5:
        key = draw(st.sampled_from(OTHER_KEYS))
        value = draw(
            st.one_of(
                st.sampled_from(PROVIDERS + OPERATIONS + ["LLM", "generation", "true", "False"]).map(
                    lambda s: av(string_value=s)
                ),
                any_values,
            )
        )
    elif kind == 6:
        key, value = draw(texts.map(lambda s: s[:64])), draw(any_values)
    else:
        key, value = draw(st.sampled_from(RESOURCE_KEYS)), draw(any_values)
    return KeyValue(key=key, value=value)


LLM_MARKERS: list[dict[str, Any]] = [
    {},
    {"gen_ai.operation.name": "chat"},
    {
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.provider.name": "openai",
    },
    {"openinference.span.kind": "LLM", "llm.model_name": "gpt-4o"},
    {"langfuse.observation.type": "generation"},
    {"gen_ai.request.model": "o3", "gen_ai.usage.input_tokens": 5},
    {"gen_ai.operation.name": "invoke_agent", "gen_ai.usage.input_tokens": 5},
]


def ids(length: int) -> st.SearchStrategy[bytes]:
    """Ids of the right length mostly; empty, short, long and all-zero ones too."""
    return st.one_of(
        st.binary(min_size=length, max_size=length),
        st.sampled_from(
            [b"", b"\x01", b"\x00" * length, b"\x01" * 15, b"\x01" * 17, b"\x01" * 32, b"\xff" * 9]
        ),
        st.binary(max_size=40),
    )


TIME_SPECIALS = [
    0,
    1,
    999,
    1_000,
    10**9,
    DAY_NS,
    NOW - 1,
    NOW,
    NOW + DAY_NS,
    NOW + DAY_NS + 1,
    2**63 - 1,
    2**63,
    YEAR_9999_S,
    YEAR_9999_S * 10**6,
    U64_MAX,
]
start_times = st.one_of(
    st.integers(NOW - 400 * DAY_NS, NOW), st.sampled_from(TIME_SPECIALS), st.integers(0, U64_MAX)
)


@st.composite
def end_times(draw: st.DrawFn, start: int) -> int:
    kind = draw(st.integers(0, 2))
    if kind == 0:
        delta = draw(st.one_of(st.integers(0, 10**12), st.sampled_from([-1, -(10**9), 0, 1])))
        return min(max(start + delta, 0), U64_MAX)
    if kind == 1:
        return draw(st.sampled_from(TIME_SPECIALS))
    return draw(st.integers(0, U64_MAX))


@st.composite
def spans(draw: st.DrawFn, trace_ids: list[bytes], span_ids: list[bytes]) -> Span:
    out = Span(
        trace_id=draw(st.one_of(st.sampled_from(trace_ids), ids(16))),
        span_id=draw(st.one_of(st.sampled_from(span_ids), ids(8))),
        parent_span_id=draw(st.one_of(st.just(b""), st.sampled_from(span_ids), ids(8))),
        name=draw(texts.map(lambda s: s[:300])),
    )
    out.kind = draw(st.sampled_from([0, 1, 3, 5, 6, 99, -1, 2**31 - 1]))
    out.start_time_unix_nano = start = draw(start_times)
    out.end_time_unix_nano = draw(end_times(start))
    marker = draw(st.sampled_from(LLM_MARKERS))
    out.attributes.extend(KeyValue(key=k, value=scalar_av(v)) for k, v in marker.items())
    out.attributes.extend(draw(st.lists(attribute(), max_size=10)))
    out.status.code = draw(st.sampled_from([0, 1, 2, 3, -1, 2**31 - 1]))  # type: ignore[assignment]
    out.status.message = draw(texts)
    if draw(st.integers(0, 5)) == 0:
        link = out.links.add()
        link.trace_id, link.span_id = draw(ids(16)), draw(ids(8))
    return out


def scalar_av(value: str | int | float) -> AnyValue:
    if isinstance(value, str):
        return av(string_value=value)
    if isinstance(value, float):
        return av(double_value=value)
    return av(int_value=value)


@st.composite
def export_requests(draw: st.DrawFn) -> ExportTraceServiceRequest:
    """An Export request of hostile spans; spans share a few ids (parents, duplicates, cycles)."""
    trace_ids = draw(st.lists(st.binary(min_size=16, max_size=16), min_size=1, max_size=3))
    span_ids = draw(st.lists(st.binary(min_size=8, max_size=8), min_size=1, max_size=6))
    req = ExportTraceServiceRequest()
    for _ in range(draw(st.integers(0, 3))):
        rs = req.resource_spans.add()
        rs.resource.attributes.extend(draw(st.lists(attribute(), max_size=5)))
        if draw(st.booleans()):
            rs.resource.attributes.add(key=c.SERVICE_NAME_KEY, value=av(string_value=draw(texts)))
        for _ in range(draw(st.integers(0, 2))):
            ss = rs.scope_spans.add()
            ss.scope.name = draw(texts.map(lambda s: s[:64]))
            for _ in range(draw(st.integers(0, 5))):
                ss.spans.append(draw(spans(trace_ids, span_ids)))
            if ss.spans and draw(st.booleans()):  # the same span twice (a retry inside one batch)
                ss.spans.append(copy.deepcopy(draw(st.sampled_from(list(ss.spans)))))
    return req


@st.composite
def llm_requests(draw: st.DrawFn) -> ExportTraceServiceRequest:
    """LLM calls that are fine (ids, times, model) but for a few hostile attributes each."""
    calls = []
    for _ in range(draw(st.integers(1, 3))):
        attrs = chat(user=draw(st.sampled_from([None, "u1"])), model=draw(st.sampled_from(MODELS)))
        call = span(
            attrs,
            trace_id=draw(st.binary(min_size=16, max_size=16).filter(any)),
            span_id=draw(st.binary(min_size=8, max_size=8).filter(any)),
            start=draw(st.integers(NOW - 30 * DAY_NS, NOW)),
            duration_ns=draw(st.sampled_from([0, 1, 250_000_000, 10**15])),
        )
        call.attributes.extend(draw(st.lists(attribute(), min_size=1, max_size=4)))
        calls.append(call)
    req = request(calls)
    req.resource_spans[0].resource.attributes.extend(draw(st.lists(attribute(), max_size=3)))
    return req


conventions_st = st.builds(
    compile_conventions,
    st.just(()),
    st.sampled_from([1, 16, 64, 4096]),
    st.sampled_from([1, 3, 64]),
)
DEFAULT_CONVENTIONS = compile_conventions()

# ---- hand-made protobuf (what protobuf will not serialise) --------------------------------------


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        if n:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def length_delimited(number: int, payload: bytes) -> bytes:
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def nested_value(steps: int, leaf: bytes) -> tuple[bytes, int]:
    """An AnyValue nested ``steps`` times (kvlist_value inside array_value inside kvlist_value ...).

    Returns the bytes and the message depth of the AnyValue chain (a kvlist step adds 3 levels:
    AnyValue > KeyValueList > KeyValue; an array step 2: AnyValue > ArrayValue).
    """
    value, depth = leaf, 1
    for i in range(steps):
        if i % 2:
            value, depth = length_delimited(5, length_delimited(1, value)), depth + 2
        else:
            kv = length_delimited(1, b"k") + length_delimited(2, value)
            value, depth = length_delimited(6, length_delimited(1, kv)), depth + 3
    return value, depth


def wrap_span(span_bytes: bytes, resource_attribute: bytes = b"") -> bytes:
    """ExportTraceServiceRequest{resource_spans{resource{attributes}, scope_spans{spans}}}."""
    resource = length_delimited(1, length_delimited(1, resource_attribute)) if resource_attribute else b""
    return length_delimited(1, resource + length_delimited(2, length_delimited(2, span_bytes)))


INVALID_UTF8 = [
    b"\xff",
    b"\xfe",
    b"\x80",
    b"\xc3",  # a lead byte with nothing after it
    b"\xc0\x80",  # overlong NUL
    b"\xe0\x80\xaf",  # overlong '/'
    b"\xed\xa0\x80",  # U+D800, a surrogate
    b"\xed\xbf\xbf",  # U+DFFF
    b"\xf4\x90\x80\x80",  # beyond U+10FFFF
    b"\xf0\x9f\x98",  # a 4-byte sequence cut short
    b"\xe2\x28\xa1",
]
# Every example is built from its draws alone (no os.urandom ids): replays must be identical.
TRACE_ID, SPAN_ID = bytes(range(1, 17)), bytes(range(1, 9))
PLACEHOLDER = "QzXplaceholderXzQ"  # 17 ASCII bytes, found nowhere else in a serialised request


# ---- checking mapped output ----------------------------------------------------------------------


def utf8_text(value: Any, what: str) -> str:
    assert isinstance(value, str), f"{what} is not a str: {value!r}"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise AssertionError(f"{what} is not valid text (cannot be UTF-8): {value[:80]!r}") from exc
    return value


def check_record(record: RequestRecord, conv: Conventions, now: int) -> None:
    limit = conv.max_value_length
    assert len(record.trace_id) == 32 and HEX.fullmatch(record.trace_id) and set(record.trace_id) != {"0"}
    assert len(record.span_id) == 16 and HEX.fullmatch(record.span_id) and set(record.span_id) != {"0"}
    if record.parent_span_id is not None:
        utf8_text(record.parent_span_id, "parent_span_id")
        assert HEX.fullmatch(record.parent_span_id)
        assert len(record.parent_span_id) <= max(16, limit), (
            f"parent_span_id of {len(record.parent_span_id)} chars, over max_value_length={limit}"
        )
    assert isinstance(record.start_time_unix_nano, int)
    assert 0 < record.start_time_unix_nano <= now + DAY_NS
    assert math.isfinite(record.duration_ms) and record.duration_ms >= 0
    for name in TOKEN_FIELDS:
        count = getattr(record, name)
        assert count is None or (type(count) is int and 0 <= count <= MAX_TOKENS), f"{name}={count!r}"
    for name in TEXT_FIELDS:
        value = getattr(record, name)
        if value is not None:
            utf8_text(value, name)
            assert len(value) <= limit, f"{name} has {len(value)} chars, over max_value_length={limit}"
    assert record.status in ("ok", "error")
    if record.cost_usd is None:
        assert record.cost_source is None
    else:
        assert record.cost_source == "reported"
        assert isinstance(record.cost_usd, Decimal) and record.cost_usd.is_finite()
        assert 0 <= record.cost_usd <= MAX_COST_USD
    assert record.streaming is None or isinstance(record.streaming, bool)
    assert isinstance(record.properties, dict)
    assert len(record.properties) <= conv.max_properties
    for key, value in record.properties.items():
        utf8_text(key, "a property name")
        utf8_text(value, f"property {key[:40]!r}")
        assert len(key) <= limit and len(value) <= limit


def check_mapped(req: ExportTraceServiceRequest, conv: Conventions, now: int = NOW) -> MappedRequest:
    """Invariant 2: map_request never raises; sane records; every span accounted for."""
    mapped = map_request(req, conv, now_unix_nano=now)
    for record in mapped.records:
        check_record(record, conv, now)
    for rejection in mapped.rejected:
        # They are sent back in partial_success.error_message, a protobuf string.
        utf8_text(rejection.name, "a rejected span's name")
        utf8_text(rejection.reason, "a rejection reason")
    # The mapper's own classification of each span; LLM spans repeated in a request count once.
    total = non_llm = 0
    llm: set[tuple[str, str]] = set()
    for resource_spans in req.resource_spans:
        for scope_spans in resource_spans.scope_spans:
            for s in scope_spans.spans:
                total += 1
                scan = scan_attributes(s.attributes, conv)
                if _is_llm_call(scan, _declared_operation(scan)):
                    llm.add((s.trace_id.hex(), s.span_id.hex()))
                else:
                    non_llm += 1
    keys = [(r.trace_id, r.span_id) for r in mapped.records] + [
        (r.trace_id, r.span_id) for r in mapped.rejected
    ]
    assert len(keys) == len(set(keys)), "a span was mapped twice"
    assert set(keys) == llm, "the records and rejections are not exactly the LLM spans"
    assert mapped.skipped == non_llm
    assert len(mapped.records) + len(mapped.rejected) + mapped.skipped == non_llm + len(llm) <= total
    return mapped


def decode_or_invalid(decode: Callable[[bytes], ExportTraceServiceRequest], body: bytes) -> Any:
    """Invariant 1: the decoded request, or None when the decoder said InvalidInput."""
    try:
        req = decode(body)
    except InvalidInput as exc:
        utf8_text(str(exc), "the InvalidInput message")  # it becomes a google.rpc.Status message
        return None
    assert isinstance(req, ExportTraceServiceRequest)
    return req


# ---- OTLP/JSON bodies ----------------------------------------------------------------------------


def _paths(node: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield path
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, (*path, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _paths(value, (*path, i))


def _replace(doc: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    parent = doc
    for step in path[:-1]:
        parent = parent[step]
    parent[path[-1]] = value
    return doc


ID_JUNK = [
    "",
    "0",
    "zz",
    "0g" * 8,
    "00" * 16,
    "0" * 31,
    "AB" * 8,
    "ab" * 15,
    "ab" * 17,
    "ab" * 32,
    "ab " * 8,
    "\ud800",
    "é" * 16,
]
INT64_JUNK: list[Any] = [
    0,
    -1,
    1.0,
    1.5,
    1e3,
    2**64,
    2**64 - 1,
    -(2**63),
    10**30,
    YEAR_9999_NS,
    str(YEAR_9999_NS),
    "1e3",
    "-1",
    "0x10",
    " 7",
    "18446744073709551615",
    "18446744073709551616",
    "",
    None,
    True,
]
LONE_SURROGATE_TEXT = ["\ud800", "a\udc00b", "\udfff" * 3, "\ud83d", "x" * 40 + "\udbff"]
ENUM_JUNK: list[Any] = [
    0,
    2,
    3,
    99,
    -1,
    2**31,
    2**31 - 1,
    2**40,
    "SPAN_KIND_CLIENT",
    "STATUS_CODE_ERROR",
    "nope",
    1.5,
    None,
]


@st.composite
def otlp_json_documents(draw: st.DrawFn) -> Any:
    """An OTLP/JSON document built from a fuzzed request, then damaged in a few places."""
    doc: Any = to_otlp_json(draw(export_requests()))
    for _ in range(draw(st.integers(0, 4))):
        paths = list(_paths(doc))
        path = draw(st.sampled_from(paths))
        name = path[-1] if path else None
        how = draw(st.integers(0, 7))
        if how == 0:
            doc = _replace(doc, path, draw(json_values))
        elif how == 1 and name in ("traceId", "spanId", "parentSpanId"):
            doc = _replace(doc, path, draw(st.one_of(st.sampled_from(ID_JUNK), json_scalars)))
        elif how == 1 and isinstance(name, str) and name.endswith(("UnixNano", "Value", "Count")):
            doc = _replace(doc, path, draw(st.sampled_from(INT64_JUNK)))
        elif how == 1 and name in ("kind", "code"):
            doc = _replace(doc, path, draw(st.sampled_from(ENUM_JUNK)))
        elif how == 2 and isinstance(_get(doc, path), dict):
            key = draw(
                st.one_of(
                    st.sampled_from(["unknownField", "resource_spans", "trace_id", "@type"]), json_texts
                )
            )
            _get(doc, path)[key] = draw(json_values)
        elif how == 3 and path:
            parent = _get(doc, path[:-1])
            if isinstance(parent, dict):
                del parent[path[-1]]
        elif how == 4:
            doc = _replace(doc, path, [_get(doc, path)])
        elif how == 5 and isinstance(_get(doc, path), list):
            doc = _replace(doc, path, {"0": _get(doc, path)})
        elif how == 6:  # lone surrogates where anything was
            doc = _replace(doc, path, draw(st.sampled_from(LONE_SURROGATE_TEXT)))
        elif how == 7 and isinstance(_get(doc, path), dict):
            _get(doc, path)[draw(st.sampled_from(LONE_SURROGATE_TEXT))] = draw(json_values)
    return doc


def _get(doc: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        doc = doc[step]
    return doc


def dump_json(doc: Any, ascii_only: bool) -> bytes:
    """JSON bytes; lone surrogates become \\udxxx escapes, or (not ASCII) invalid UTF-8 bytes."""
    return json.dumps(doc, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


@st.composite
def json_bodies(draw: st.DrawFn) -> bytes:
    kind = draw(st.integers(0, 5))
    if kind == 0:
        return dump_json(draw(otlp_json_documents()), draw(st.booleans()))
    if kind == 1:  # JSON, but not an ExportTraceServiceRequest (or not an object at all)
        return dump_json(draw(json_values), draw(st.booleans()))
    if kind == 2:  # nesting, up to and far beyond every recursion limit
        depth = draw(st.sampled_from([10, 99, 100, 101, 200, 1_000, 100_000]))
        return draw(
            st.sampled_from(
                [
                    b"[" * depth + b"]" * depth,
                    b'{"resourceSpans":' * depth + b"1" + b"}" * depth,
                    b'{"resourceSpans":[{"resource":{"attributes":[{"key":"k","value":'
                    + b'{"arrayValue":{"values":[' * depth
                    + b'{"stringValue":"x"}'
                    + b"]}}" * depth
                    + b"}]}}]}",
                ]
            )
        )
    if kind == 3:  # bytes-level damage to a valid body
        body = dump_json(to_otlp_json(draw(export_requests())), True)
        return mutate_bytes(draw, body)
    if kind == 4:
        return dump_json(to_otlp_json(draw(llm_requests())), draw(st.booleans()))
    return draw(st.binary(max_size=64))


# ---- protobuf bodies ----------------------------------------------------------------------------


def mutate_bytes(draw: st.DrawFn, body: bytes) -> bytes:
    how = draw(st.integers(0, 3))
    if how == 0 or not body:
        return body[: draw(st.integers(0, len(body)))]  # truncated
    at = draw(st.integers(0, len(body) - 1))
    if how == 1:
        return body[:at] + bytes([draw(st.integers(0, 255))]) + body[at + 1 :]  # a byte changed
    if how == 2:
        return body[:at] + draw(st.binary(min_size=1, max_size=8)) + body[at:]  # bytes inserted
    return body[:at] + body[at + draw(st.integers(1, 8)) :]  # bytes removed


@st.composite
def invalid_utf8_requests(draw: st.DrawFn) -> bytes:
    """A serialised request with invalid UTF-8 spliced into string fields (lengths kept)."""
    attrs = chat()
    place = draw(st.sampled_from(["name", "key", "value", "nested", "array", "resource", "status", "scope"]))
    attrs_pb = [KeyValue(key=k, value=scalar_av(v)) for k, v in attrs.items()]
    if place == "key":
        attrs_pb.append(KeyValue(key=f"property.{PLACEHOLDER}", value=av(string_value="x")))
    elif place == "value":
        key = draw(st.sampled_from(["user.id", "gen_ai.request.model", "property.plan", "metadata", "x"]))
        attrs_pb.append(KeyValue(key=key, value=av(string_value=PLACEHOLDER)))
    elif place == "nested":
        attrs_pb.append(KeyValue(key="metadata", value=kvlist_av([(PLACEHOLDER, av(string_value="v"))])))
    elif place == "array":
        attrs_pb.append(KeyValue(key="property.list", value=array_av([av(string_value=PLACEHOLDER)])))
    s = span({}, trace_id=TRACE_ID, span_id=SPAN_ID, name=PLACEHOLDER if place == "name" else "chat")
    s.attributes.extend(attrs_pb)
    if place == "status":
        s.status.CopyFrom(Status(code=Status.STATUS_CODE_ERROR, message=PLACEHOLDER))
    resource = {"service.name": PLACEHOLDER} if place == "resource" else None
    req = request([s], resource)
    if place == "scope":
        req.resource_spans[0].scope_spans[0].scope.name = PLACEHOLDER
    body = req.SerializeToString()
    marker = PLACEHOLDER.encode()
    assert body.count(marker) == 1
    bad = draw(st.sampled_from(INVALID_UTF8))
    at = draw(st.integers(0, len(marker) - len(bad)))
    return body.replace(marker, marker[:at] + bad + marker[at + len(bad) :])


@st.composite
def deep_requests(draw: st.DrawFn) -> tuple[bytes, int]:
    """A request whose attribute (or resource attribute) nests ``steps`` times; and its depth."""
    steps = draw(st.integers(0, 60))
    leaf = draw(
        st.sampled_from(
            [
                length_delimited(1, b"leaf"),  # string_value
                length_delimited(1, b"x" * 5_000),
                b"\x18\xff\xff\xff\xff\xff\xff\xff\xff\x7f",  # int_value, i64 max
                b"",  # no value
            ]
        )
    )
    value, depth = nested_value(steps, leaf)
    key = draw(
        st.sampled_from(
            ["metadata", "property.deep", "llm.invocation_parameters", "gen_ai.request.model", "x"]
        )
    )
    attribute_bytes = length_delimited(1, key.encode()) + length_delimited(2, value)
    base = span(chat(), trace_id=TRACE_ID, span_id=SPAN_ID).SerializeToString()
    if draw(st.booleans()):  # on the span: request > resource_spans > scope_spans > span > attribute
        return wrap_span(base + length_delimited(9, attribute_bytes)), depth + 5
    return wrap_span(base, attribute_bytes), depth + 4  # request > resource_spans > resource > attribute


def many_attributes_request(seed: int, count: int, on_resource: bool) -> ExportTraceServiceRequest:
    """One LLM span with thousands of attributes: properties, repeated known keys, random keys."""
    rnd = random.Random(seed)
    attrs = [KeyValue(key=k, value=scalar_av(v)) for k, v in chat(user="many").items()]
    known = MODEL_KEYS + OTHER_KEYS + JSON_KEYS  # not token counts or costs: they would reject the span
    for i in range(count):
        roll = rnd.random()
        if roll < 0.5:
            key = rnd.choice(c.PROPERTY_PREFIXES) + f"p{rnd.randrange(count)}"
        elif roll < 0.7:
            key = rnd.choice(known)
        else:
            key = f"random.{i}.{rnd.getrandbits(32):x}"
        value = rnd.choice(
            [
                av(string_value=f"v{i}"),
                av(int_value=rnd.randrange(-(2**63), 2**63)),
                av(double_value=rnd.random() * 10 ** rnd.randrange(-5, 30)),
                av(string_value="z" * rnd.randrange(0, 6_000)),
                av(bool_value=True),
            ]
        )
        attrs.append(KeyValue(key=key, value=value))
    ids = rnd.randbytes(24)
    req = request([span({}, trace_id=b"\x01" + ids[:15], span_id=b"\x01" + ids[16:23], start=NOW - 10**9)])
    target = req.resource_spans[0].scope_spans[0].spans[0].attributes
    if on_resource:
        target.extend(attrs[:6])  # the LLM call's own attributes stay on the span
        target, attrs = req.resource_spans[0].resource.attributes, attrs[6:]
    target.extend(attrs)
    return req


@st.composite
def protobuf_bodies(draw: st.DrawFn) -> bytes:
    kind = draw(st.integers(0, 6))
    if kind == 0:
        return draw(export_requests()).SerializeToString()
    if kind == 6:
        return draw(llm_requests()).SerializeToString()
    if kind == 1:
        return mutate_bytes(draw, draw(export_requests()).SerializeToString())
    if kind == 2:
        return draw(invalid_utf8_requests())
    if kind == 3:
        return draw(deep_requests())[0]
    if kind == 4:
        seed, count = draw(st.integers(0, 2**32)), draw(st.integers(1_000, 3_000))
        return many_attributes_request(seed, count, draw(st.booleans())).SerializeToString()
    return draw(st.binary(max_size=256))


# ---- 1 + 2: decoders and mapper, in process -----------------------------------------------------


@fuzz()
@given(body=st.one_of(st.binary(max_size=512), protobuf_bodies()), conv=conventions_st)
def test_decode_protobuf_then_map(body: bytes, conv: Conventions) -> None:
    """Random, truncated, damaged, spliced, deep and huge protobuf: decoded or InvalidInput; then mapped."""
    req = decode_or_invalid(decode_protobuf, body)
    if req is not None:
        check_mapped(req, conv)


@fuzz()
@given(body=invalid_utf8_requests())
def test_invalid_utf8_in_protobuf_strings_is_invalid_input(body: bytes) -> None:
    """A proto3 string field holding invalid UTF-8 is refused, whichever field it is in."""
    with pytest.raises(InvalidInput):
        decode_protobuf(body)


@fuzz(0.5)
@given(deep=deep_requests(), conv=conventions_st)
def test_nesting_up_to_and_beyond_the_recursion_limit(deep: tuple[bytes, int], conv: Conventions) -> None:
    """kvlist in array in kvlist ...: fine below protobuf's limit of 100, InvalidInput beyond; never a crash."""
    body, depth = deep
    req = decode_or_invalid(decode_protobuf, body)
    if depth <= 90:
        assert req is not None, f"a request {depth} messages deep was refused"
    if req is None:
        return
    check_mapped(req, conv)
    # The same request as OTLP/JSON: its decoder has a nesting limit of its own.
    again = decode_or_invalid(decode_json, json.dumps(to_otlp_json(req)).encode())
    if again is not None:
        check_mapped(again, conv)


@fuzz()
@given(body=json_bodies(), conv=conventions_st)
def test_decode_json_then_map(body: bytes, conv: Conventions) -> None:
    """Hostile OTLP/JSON (wrong types, unknown fields, bad ids, int64 and enum forms, surrogates): never a crash."""
    req = decode_or_invalid(decode_json, body)
    if req is not None:
        check_mapped(req, conv)


def test_a_lone_surrogate_quoted_by_the_parser_is_escaped_in_the_message() -> None:
    """Found by test_decode_json_then_map under one hash seed: json.loads lets the encoded surrogate
    through, protobuf's parser quotes it, and a google.rpc.Status message must be UTF-8."""
    assert decode_or_invalid(decode_json, b'{"resourceSpans": "\xed\xa0\x80"}') is None


@fuzz()
@given(req=st.one_of(export_requests(), llm_requests()), conv=conventions_st)
def test_map_request_invariants(req: ExportTraceServiceRequest, conv: Conventions) -> None:
    """Hostile token counts, costs, timestamps, ids, JSON attributes and text: sane records only."""
    mapped = check_mapped(req, conv)
    # A valid request decodes from both wire formats, and maps the same way.
    for decoded in (
        decode_protobuf(req.SerializeToString()),
        decode_json(json.dumps(to_otlp_json(req)).encode()),
    ):
        again = check_mapped(decoded, conv)
        assert again.records == mapped.records
        assert again.rejected == mapped.rejected and again.skipped == mapped.skipped


# ---- 3: what the mapper produces can be stored --------------------------------------------------


@dataclass
class Pipeline:
    ingestor: Ingestor
    store: Store
    stored: set[tuple[str, str]] = field(default_factory=set)

    def rows(self) -> int:
        con = self.store.reader()
        try:
            (count,) = con.execute("SELECT count(*) FROM requests").fetchone() or (0,)
        finally:
            con.close()
        return int(count)

    def export(self, req: ExportTraceServiceRequest) -> None:
        """Invariant 3: the export commits (never Unavailable) and stores one row per new record."""
        records = map_request(req, DEFAULT_CONVENTIONS, now_unix_nano=NOW).records
        new = {(r.trace_id, r.span_id) for r in records} - self.stored
        before = self.rows()
        try:
            self.ingestor.export(req)
        except Unavailable as exc:
            raise AssertionError(
                f"the store refused mapped records ({exc}): exporters would retry this batch forever"
            ) from exc
        assert self.rows() - before == len(new), "rows stored != new records"
        self.stored |= new


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    """Store, pricer and ingestor built as App builds them, on a DuckDB file; a fixed clock."""
    stats = Stats()
    store = Store(tmp_path_factory.mktemp("fuzz-store") / "fuzz.duckdb", stats, memory_limit_mib=256)
    ingestor = Ingestor(DEFAULT_CONVENTIONS, Pricer(), store, stats, clock=lambda: NOW)
    try:
        yield Pipeline(ingestor, store)
    finally:
        store.close()


@fuzz(0.5)
@given(req=st.one_of(export_requests(), llm_requests()))
def test_mapped_records_are_stored(pipeline: Pipeline, req: ExportTraceServiceRequest) -> None:
    """Every record the mapper accepts (huge counts, costs, long text, NUL...) is committed."""
    pipeline.export(req)


@fuzz(0.1)
@given(
    seed=st.integers(0, 2**32),
    count=st.sampled_from([1_000, 3_000, 8_000]),
    on_resource=st.booleans(),
    conv=conventions_st,
)
def test_thousands_of_attributes(
    pipeline: Pipeline, seed: int, count: int, on_resource: bool, conv: Conventions
) -> None:
    """Thousands of attributes on one span (or its resource): decoded both ways, mapped within limits, stored."""
    req = many_attributes_request(seed, count, on_resource)
    decoded = decode_protobuf(req.SerializeToString())
    mapped = check_mapped(decoded, conv)
    assert len(mapped.records) == 1
    again = decode_or_invalid(decode_json, json.dumps(to_otlp_json(req)).encode())
    assert again is not None
    check_mapped(again, conv)
    pipeline.export(decoded)


@fuzz(0.3)
@given(
    pair=st.tuples(st.sampled_from(MODELS), st.sampled_from(["openai", "anthropic", "google"])),
    data=st.data(),
)
def test_extreme_but_valid_values_are_stored(
    pipeline: Pipeline, pair: tuple[str, str], data: st.DataObject
) -> None:
    """Two LLM calls in one export with counts and costs at the edges the mapper accepts."""
    model, provider = pair
    edge_counts = st.one_of(st.sampled_from([0, 1, 10**9, MAX_TOKENS]), st.integers(0, MAX_TOKENS))
    edge_costs = st.sampled_from([None, 0, "0.000000001", "1e-30", 1.5, 5e5, str(MAX_COST_USD)])
    calls = []
    for i in (1, 2):
        attrs = chat(user="edge", model=model, inp=data.draw(edge_counts), out=data.draw(edge_counts))
        attrs["gen_ai.provider.name"] = provider
        for name in ("gen_ai.usage.cache_read.input_tokens", "gen_ai.usage.reasoning.output_tokens"):
            attrs[name] = data.draw(edge_counts)
        inp, cached = attrs["gen_ai.usage.input_tokens"], attrs["gen_ai.usage.cache_read.input_tokens"]
        if cached > inp:  # input counted without cache: input + cache is what must stay in bounds
            attrs["gen_ai.usage.cache_read.input_tokens"] = min(cached, MAX_TOKENS - inp)
        cost = data.draw(edge_costs)
        if cost is not None:
            attrs["gen_ai.usage.cost"] = cost
        start = data.draw(st.sampled_from([NOW - 10**9, 1_000, NOW + DAY_NS]))
        trace_id, span_id = (
            data.draw(st.binary(min_size=16, max_size=16)),
            data.draw(st.binary(min_size=8, max_size=8)),
        )
        calls.append(
            span(attrs, trace_id=b"\x01" + trace_id[1:], span_id=bytes([i]) + span_id[1:], start=start)
        )
    req = request(calls)
    assert len(check_mapped(req, DEFAULT_CONVENTIONS).records) == 2
    pipeline.export(req)


# ---- 4: end to end, against one running service -------------------------------------------------

HTTP_OK = {200, 400, 413, 415}
GRPC_OK = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED}
EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
MAX_MIB = 1  # small, so that 413 / RESOURCE_EXHAUSTED are cheap to reach
MAX_BYTES = MAX_MIB * 1024 * 1024
PROTOBUF, JSON = "application/x-protobuf", "application/json"


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    svc = Service(tmp_path_factory.mktemp("fuzz-service") / "user_metrics.duckdb", max_message_mib=MAX_MIB)
    svc.start()
    try:
        yield svc
    finally:
        svc.stop()


@pytest.fixture(scope="module")
def channel(running: Service) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(
        running.target, options=[("grpc.max_send_message_length", 64 * 1024 * 1024)]
    ) as ch:
        yield ch


def http_post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, str, bytes]:
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    try:
        conn.request("POST", "/v1/traces", body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.getheader("Content-Type", ""), response.read()
    finally:
        conn.close()


def grpc_export(channel: grpc.Channel, body: bytes, gzip_it: bool = False) -> tuple[grpc.StatusCode, str]:
    call = channel.unary_unary(EXPORT, request_serializer=None, response_deserializer=None)
    try:
        call(body, timeout=60, compression=grpc.Compression.Gzip if gzip_it else None)
    except grpc.RpcError as exc:
        return exc.code(), exc.details() or ""
    return grpc.StatusCode.OK, ""


def check_still_serving(svc: Service, channel: grpc.Channel) -> None:
    """/healthz answers, and known-good exports over gRPC and both HTTP encodings are stored."""
    assert svc.app is not None
    parts = urllib.parse.urlsplit(svc.app.api_url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.request("GET", "/healthz")
        assert conn.getresponse().status == 200
    finally:
        conn.close()
    user = f"canary-{uuid.uuid4().hex}"
    assert grpc_export(channel, request([span(chat(user=user))]).SerializeToString()) == (
        grpc.StatusCode.OK,
        "",
    )
    body = request([span(chat(user=user))]).SerializeToString()
    assert http_post(svc.app.otlp_http_url, body, {"Content-Type": PROTOBUF})[0] == 200
    body = json.dumps(to_otlp_json(request([span(chat(user=user))]))).encode()
    assert http_post(svc.app.otlp_http_url, body, {"Content-Type": JSON})[0] == 200
    con = svc.app.store.reader()
    try:
        (count,) = con.execute("SELECT count(*) FROM requests WHERE user_id = ?", [user]).fetchone() or (0,)
    finally:
        con.close()
    assert count == 3


def bad_gzip(draw: st.DrawFn, body: bytes) -> bytes:
    packed = gzip.compress(body, mtime=0)
    how = draw(st.integers(0, 3))
    if how == 0:
        return body  # not gzip at all
    if how == 1:
        return packed[: draw(st.integers(0, len(packed) - 1))]  # cut short
    if how == 2:
        return packed + draw(st.binary(min_size=1, max_size=16))  # trailing junk
    at = draw(st.integers(10, len(packed) - 1))
    return packed[:at] + bytes([packed[at] ^ 0xFF]) + packed[at + 1 :]  # corrupt


@st.composite
def http_requests(draw: st.DrawFn) -> tuple[bytes, dict[str, str]]:
    # Bodies over the limit are answered 413 before they are read, and the connection is closed:
    # the client may then fail to send the rest. Only decompression goes over the limit here.
    body = draw(st.one_of(protobuf_bodies(), json_bodies()))[: MAX_BYTES - 4096]
    content_type = draw(
        st.sampled_from(
            [
                "application/x-protobuf",
                "application/json",
                "application/json; charset=utf-8",
                "Application/X-Protobuf",
                "text/plain",
                "",
            ]
        )
    )
    headers = {"Content-Type": content_type} if content_type else {}
    encoding = draw(st.sampled_from(["identity", "gzip", "bad-gzip", "bomb", "deflate"]))
    if encoding == "gzip":
        body = gzip.compress(body, mtime=0)
    elif encoding == "bad-gzip":
        body = bad_gzip(draw, body)
    elif encoding == "bomb":  # small on the wire, over the limit once decompressed
        body = gzip.compress(b"\x00" * (MAX_BYTES + draw(st.integers(1, 4096))), mtime=0)
    elif encoding == "deflate":
        body = zlib.compress(body)
    if encoding != "identity":
        headers["Content-Encoding"] = "gzip" if encoding in ("bad-gzip", "bomb") else encoding
    return body, headers


def test_http_receiver_survives_hostile_bodies(running: Service, channel: grpc.Channel) -> None:
    """OTLP/HTTP: 200, 400, 413 or 415 with a body in the request's encoding; never a 500 or no answer."""
    assert running.app is not None
    url = running.app.otlp_http_url

    @fuzz(0.5)
    @given(req=http_requests())
    def post(req: tuple[bytes, dict[str, str]]) -> None:
        body, headers = req
        status, content_type, data = http_post(url, body, headers)
        assert status in HTTP_OK, f"HTTP {status}: {data[:300]!r}"
        sent = headers.get("Content-Type", "").split(";")[0].strip().lower()
        assert content_type == (JSON if sent == JSON else PROTOBUF)  # answered in the request's encoding
        message = ExportTraceServiceResponse() if status == 200 else status_pb2.Status()
        if content_type == JSON:
            json_format.Parse(data, message)
        else:
            message.ParseFromString(data)

    post()
    check_still_serving(running, channel)


def test_grpc_receiver_survives_hostile_bodies(running: Service, channel: grpc.Channel) -> None:
    """OTLP/gRPC raw bytes: OK, INVALID_ARGUMENT or RESOURCE_EXHAUSTED; never INTERNAL, UNKNOWN or UNAVAILABLE."""

    @fuzz(0.8)  # cheap: no HTTP connection per example
    @given(
        body=st.one_of(
            protobuf_bodies(),
            llm_requests().map(lambda req: req.SerializeToString()),  # valid, so they reach the store
            json_bodies(),  # not protobuf at all
            st.integers(1, 4096).map(lambda n: b"\x00" * (MAX_BYTES + n)),  # over the limit
        ),
        gzip_it=st.booleans(),
    )
    def send(body: bytes, gzip_it: bool) -> None:
        code, details = grpc_export(channel, body, gzip_it)
        assert code in GRPC_OK, f"{code}: {details[:300]}"

    send()
    check_still_serving(running, channel)
