"""The native split (``_otlp_scan.split``) against a straightforward Python reading with upb.

On every captured request and on Hypothesis-made ones, the C scanner's outputs equal
``native_reference.expected_split``: the candidate sub-request parsed back (every ResourceSpans and
ScopeSpans kept, candidate spans verbatim), the 40-byte plain records, the span count and the
attributes dropped from plain spans. On mutated bodies (bit flips, truncation, inserted, deleted and
repeated bytes) split raises ValueError exactly when upb's ``FromString`` raises DecodeError. The
hand-written validity rules are in test_native_validity.py.

Skipped when the module is not built, unless USER_METRICS_REQUIRE_NATIVE=1 (CI), where it fails.
"""

from __future__ import annotations

import struct
import threading
from pathlib import Path

import pytest
from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from native_reference import (
    IDS,
    assert_split_matches,
    attr,
    in_span,
    ld,
    lists,
    native_module,
    requests,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

CAPTURES = sorted(p for p in (Path(__file__).parent.parent / "captures").glob("*/raw/*") if p.is_file())
TABLE = lists()
FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.fixture(scope="module")
def native():
    return native_module()


def test_every_capture_splits_as_the_reference(native):
    assert len(CAPTURES) >= 60
    for path in CAPTURES:
        body = path.read_bytes()
        assert_split_matches(native, body, TABLE)
        assert_split_matches(native, body, TABLE, limit=3)  # reads 3 keys; drops the rest on plain spans
        assert_split_matches(native, body, TABLE, limit=0)


def test_captures_have_plain_and_candidate_spans(native):
    """A test that cannot fail is a defect: the captures exercise both outputs."""
    plain = candidates = 0
    for path in CAPTURES:
        cand, rec, spans, _ = native.split(path.read_bytes(), TABLE.table(native), 1024)
        plain += len(rec) // 40
        candidates += spans - len(rec) // 40
    assert plain > 50 and candidates > 50


@FUZZ
@given(requests(), st.sampled_from([1024, 0, 1, 3]))
def test_made_requests_split_as_the_reference(native, req, limit):
    assert_split_matches(native, req.SerializeToString(), TABLE, limit)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid body (made or captured) with 1-4 mutations."""
    if draw(st.booleans()):
        body = bytearray(draw(st.sampled_from(CAPTURES)).read_bytes())
    else:
        body = bytearray(draw(requests()).SerializeToString())
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(body)))
        kind = draw(st.sampled_from(["flip", "truncate", "insert", "delete", "repeat", "byte"]))
        if kind == "flip" and at < len(body):
            body[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "byte" and at < len(body):
            body[at] = draw(
                st.sampled_from([0x00, 0x7F, 0x80, 0xFF, 0x04, 0x0B, 0x0C, 0x06, 0x07, 0xC0, 0xED])
            )
        elif kind == "truncate":
            del body[at:]
        elif kind == "insert":
            body[at:at] = draw(st.binary(min_size=1, max_size=6))
        elif kind == "delete":
            del body[at : at + draw(st.integers(1, 8))]
        elif kind == "repeat":
            body[at:at] = body[at : at + draw(st.integers(1, 40))]
    return bytes(body)


@settings(FUZZ, max_examples=600)
@given(mutated())
def test_mutated_bodies_are_refused_exactly_when_upb_refuses_them(native, body):
    try:
        ExportTraceServiceRequest.FromString(body)
    except DecodeError:
        with pytest.raises(ValueError, match="invalid ExportTraceServiceRequest"):
            native.split(body, TABLE.table(native), 1024)
        return
    assert_split_matches(native, body, TABLE)


def test_mutations_reach_both_outcomes(native):
    """The mutation strategy makes valid and invalid bodies (else the test above proves little)."""
    outcomes = set()

    @settings(FUZZ, max_examples=40)
    @given(mutated())
    def collect(body):
        try:
            ExportTraceServiceRequest.FromString(body)
            outcomes.add("valid")
        except DecodeError:
            outcomes.add("invalid")

    collect()
    assert outcomes == {"valid", "invalid"}


# ---- the plain rule -------------------------------------------------------------------------------


def one_span(native, fields: bytes, limit: int = 1024) -> tuple[bool, int]:
    """(is the span plain, plain_dropped_attributes) for a request of that one span."""
    _, plain, spans, dropped = native.split(in_span(fields), TABLE.table(native), limit)
    assert spans == 1
    return len(plain) == 40, dropped


@pytest.mark.parametrize(
    ("ids", "plain"),
    [
        (IDS, True),
        (IDS + ld(4, b"\x03" * 8), True),
        (IDS + ld(4, b"\x00" * 8), False),  # an all-zero parent would read as none: a candidate
        (IDS + ld(4, b"\x03" * 7), False),
        (IDS + ld(4, b"\x03" * 16), False),
        (ld(1, b"\x01" * 15) + ld(2, b"\x02" * 8), False),
        (ld(1, b"\x00" * 16) + ld(2, b"\x02" * 8), False),
        (ld(1, b"\x01" * 16) + ld(2, b"\x00" * 8), False),
        (ld(1, b"\x01" * 16) + ld(2, b"\x02" * 9), False),
        (ld(1, b"\x01" * 16), False),
        (ld(1, b"\x00" * 16) + IDS, True),  # the last occurrence of a scalar wins
        (IDS + ld(1, b"\x01" * 3), False),
    ],
)
def test_ids_decide(native, ids, plain):
    assert one_span(native, ids)[0] is plain


@pytest.mark.parametrize(
    "key", ["http.route", "ai", "gen_ai.", "gen_ai.x\nmodel", "ai.\nusage", "x.user.id", ""]
)
def test_keys_that_leave_a_span_plain(native, key):
    assert one_span(native, IDS + attr(key.encode()))[0]


@pytest.mark.parametrize(
    "key",
    [
        "user.id",
        "metadata",
        "gen_ai.request.model",
        "property.",
        "property.plan",
        "helicone.property.x",
        "gen_ai.model",
        "gen_ai.xx.cost",
        "ai.usage",
        "gen_ai.token",
        "langfuse.observation.usage_details",
        "embedding.model_name",
        "ai.model\nx",
    ],
)
def test_keys_that_make_a_candidate(native, key):
    assert not one_span(native, IDS + attr(key.encode()))[0]


def test_only_the_first_max_attributes_keys_are_read(native):
    fields = IDS + attr(b"http.route") + attr(b"url.path") + attr(b"user.id")
    assert one_span(native, fields, limit=3) == (False, 0)
    assert one_span(native, fields, limit=2) == (True, 1)
    assert one_span(native, fields, limit=0) == (True, 3)
    # a candidate's dropped attributes are the Python mapper's to count
    assert one_span(native, IDS + attr(b"user.id") + attr(b"a") + attr(b"b"), limit=1) == (False, 0)


def test_the_last_key_of_an_attribute_is_the_one_read(native):
    assert not one_span(native, IDS + ld(9, ld(1, b"http.route") + ld(1, b"user.id")))[0]
    assert one_span(native, IDS + ld(9, ld(1, b"user.id") + ld(1, b"http.route")))[0]


def test_a_custom_table(native):
    table = native.Table(["k"], ["p."], ["x."], ["w"])
    body = in_span(IDS + attr(b"x.a\nw"))
    assert len(native.split(body, table, 10)[1]) == 40
    for key in (b"k", b"p.q", b"x.w", b"x.aw\n"):
        assert native.split(in_span(IDS + attr(key)), table, 10)[1] == b""
    everything = native.Table([], [""], [], [])  # an empty prefix starts every key
    assert native.split(in_span(IDS + attr(b"a")), everything, 10)[1] == b""


# ---- outputs --------------------------------------------------------------------------------------


def test_outputs_of_a_request_with_empty_scopes(native):
    rs = ld(3, b"https://schema") + ld(2, ld(3, b"s1")) + ld(2, ld(1, ld(1, b"scope")) + ld(2, IDS))
    body = ld(1, rs) + ld(1, b"") + ld(9, b"dropped request-level unknown field")
    candidates, plain, spans, dropped = native.split(body, TABLE.table(native), 1024)
    assert (spans, dropped) == (1, 0)
    assert plain == b"\x01" * 16 + b"\x02" * 8 + bytes(8) + struct.pack("<II", 0, 0)
    assert candidates == ld(
        1, ld(3, b"https://schema") + ld(2, ld(3, b"s1")) + ld(2, ld(1, ld(1, b"scope")))
    ) + ld(1, b"")


def test_ordinals_count_every_span_in_request_order(native):
    span = IDS
    cand = IDS + attr(b"user.id")
    body = ld(1, ld(2, ld(2, cand) + ld(2, span)) + ld(2, ld(2, span))) + ld(
        1, ld(2, ld(2, cand) + ld(2, span))
    )
    _, plain, spans, _ = native.split(body, TABLE.table(native), 1024)
    assert spans == 5
    assert [struct.unpack_from("<I", plain, i + 32)[0] for i in range(0, len(plain), 40)] == [1, 2, 4]


def test_an_empty_body_is_an_empty_request(native):
    assert native.split(b"", TABLE.table(native), 1024) == (b"", b"", 0, 0)


def test_buffers_of_every_kind_and_bad_arguments(native):
    body = CAPTURES[0].read_bytes()
    table = TABLE.table(native)
    want = native.split(body, table, 1024)
    assert native.split(bytearray(body), table, 1024) == want
    assert native.split(memoryview(body), table, 1024) == want
    with pytest.raises(TypeError):
        native.split("text", table, 1024)
    with pytest.raises(TypeError):
        native.split(body, object(), 1024)
    with pytest.raises(ValueError):
        native.split(body, table, -1)
    with pytest.raises(TypeError):
        native.Table([b"bytes"], [], [], [])
    with pytest.raises(UnicodeEncodeError):
        native.Table(["\ud800"], [], [], [])
    with pytest.raises(TypeError):
        native.Table("user.id", [], [], [])


def test_threads_share_one_table(native):
    """The GIL is released during a split: threads splitting at once get the same results."""
    table = TABLE.table(native)
    bodies = [p.read_bytes() for p in CAPTURES]
    want = [native.split(b, table, 1024) for b in bodies]
    failures = []

    def work():
        for _ in range(5):
            if [native.split(b, table, 1024) for b in bodies] != want:
                failures.append(1)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures
