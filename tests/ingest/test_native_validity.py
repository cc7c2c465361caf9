"""Which bodies the native split refuses: exactly those upb's FromString refuses, rule by rule.

Each case states upb's measured behaviour (protobuf 7, upb): the test first checks that
``ExportTraceServiceRequest.FromString`` still behaves so (a protobuf upgrade that changes a rule
fails here, by name), then that ``_otlp_scan.split`` agrees, and where the body is valid that its
outputs equal the reference reading. Notable: a known field with a foreign wire type is an unknown
field for upb, not an error; field number 0 is refused in a message but not inside an unknown group;
a length prefix is at most 5 bytes, a tag at most 5 bytes and 2**32 - 1; nesting (messages and groups
alike) is allowed to level 100, the request being level 0.
"""

from __future__ import annotations

import pytest
from google.protobuf.message import DecodeError
from native_reference import (
    IDS,
    assert_split_matches,
    attr,
    group,
    in_span,
    ld,
    lists,
    native_module,
    tag,
    varint,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

TABLE = lists()
BAD = b"\xff"


def nested_arrays(levels: int, leaf: bytes = b"") -> bytes:
    """An AnyValue holding ``levels`` nested array_values (each adds an ArrayValue and an AnyValue)."""
    value = leaf
    for _ in range(levels):
        value = ld(5, ld(1, value))
    return value


def groups(count: int, leaf: bytes = b"") -> bytes:
    body = leaf
    for _ in range(count):
        body = group(50, body)
    return body


def value_attr(value: bytes) -> bytes:
    return attr(b"http.route", value)


# The span is level 3, its KeyValue 4, the AnyValue 5; each nested array adds 2 levels.
CASES: dict[str, tuple[bytes, bool]] = {
    # invalid UTF-8, in every kind of string field
    "utf8: attribute key": (in_span(IDS + attr(BAD)), False),
    "utf8: key beyond max_span_attributes": (in_span(IDS + attr(b"a") * 1025 + attr(BAD)), False),
    "utf8: plain span name": (in_span(IDS + ld(5, b"GET \xc0\x80")), False),
    "utf8: surrogate in name": (in_span(IDS + ld(5, b"\xed\xa0\x80")), False),
    "utf8: past U+10FFFF": (in_span(IDS + ld(5, b"\xf4\x90\x80\x80")), False),
    "utf8: truncated sequence": (in_span(IDS + ld(5, b"ab\xe2\x82")), False),
    "utf8: trace_state": (in_span(IDS + ld(3, BAD)), False),
    "utf8: status message": (in_span(IDS + ld(15, ld(2, BAD))), False),
    "utf8: event name": (in_span(IDS + ld(11, ld(2, BAD))), False),
    "utf8: event attribute key": (in_span(IDS + ld(11, ld(3, ld(1, BAD)))), False),
    "utf8: link trace_state": (in_span(IDS + ld(13, ld(3, BAD))), False),
    "utf8: string value": (in_span(IDS + value_attr(ld(1, BAD))), False),
    "utf8: string value later replaced in its oneof": (
        in_span(IDS + value_attr(ld(1, BAD) + tag(3, 0) + b"\x01")),
        False,
    ),
    "utf8: key inside a kvlist": (in_span(IDS + value_attr(ld(6, ld(1, ld(1, BAD))))), False),
    "utf8: string inside an array": (in_span(IDS + value_attr(ld(5, ld(1, ld(1, BAD))))), False),
    "utf8: scope name": (ld(1, ld(2, ld(1, ld(1, BAD)))), False),
    "utf8: scope version": (ld(1, ld(2, ld(1, ld(2, BAD)))), False),
    "utf8: scope schema_url": (ld(1, ld(2, ld(3, BAD))), False),
    "utf8: resource schema_url": (ld(1, ld(3, BAD)), False),
    "utf8: resource attribute": (in_span(IDS, resource=ld(1, ld(1, ld(1, BAD)))), False),
    "utf8: entity_ref id_keys": (ld(1, ld(1, ld(3, ld(3, BAD)))), False),
    "utf8: entity_ref description_keys": (ld(1, ld(1, ld(3, ld(4, BAD)))), False),
    "utf8 ok: bytes_value": (in_span(IDS + value_attr(ld(7, BAD))), True),
    "utf8 ok: ids are bytes": (in_span(ld(1, BAD * 16) + ld(2, BAD * 8)), True),
    "utf8 ok: unknown field": (in_span(IDS + ld(40, BAD)), True),
    "utf8 ok: NUL and 4-byte characters": (in_span(IDS + ld(5, b"a\x00\xf0\x9f\x98\x80")), True),
    # nesting
    "depth: AnyValue at level 99": (in_span(IDS + value_attr(nested_arrays(47))), True),
    "depth: ArrayValue at level 100": (in_span(IDS + value_attr(nested_arrays(47, ld(5, b"")))), True),
    "depth: AnyValue at level 101": (in_span(IDS + value_attr(nested_arrays(48))), False),
    "depth: 100 groups in the request": (groups(100), True),
    "depth: 101 groups in the request": (groups(101), False),
    "depth: groups to level 100 in a span": (in_span(IDS + groups(97)), True),
    "depth: groups to level 101 in a span": (in_span(IDS + groups(98)), False),
    "depth: groups to level 101 in an AnyValue": (
        in_span(IDS + value_attr(nested_arrays(10, groups(76)))),
        False,
    ),
    # field number 0
    "field 0 in the request": (tag(0, 0) + b"\x01", False),
    "field 0 in a span": (in_span(IDS + ld(0, b"x")), False),
    "field 0 in an AnyValue": (in_span(IDS + value_attr(tag(0, 5) + b"abcd")), False),
    "field 0 inside an unknown group (upb skips it)": (in_span(IDS + group(50, tag(0, 0) + b"\x01")), True),
    # end-group tags
    "end-group tag in the request": (tag(5, 4), False),
    "end-group tag in a span": (in_span(IDS + tag(5, 4)), False),
    "end-group tag of another group": (in_span(IDS + tag(50, 3) + tag(51, 4)), False),
    "unterminated group": (in_span(IDS + tag(50, 3) + tag(1, 0) + b"\x01"), False),
    "group closed after its message's end": (ld(1, tag(50, 3)) + tag(50, 4), False),
    # known fields with a foreign wire type: unknown fields for upb
    "wire type: varint for attributes": (in_span(IDS + tag(9, 0) + b"\x01"), True),
    "wire type: fixed32 for the name": (in_span(IDS + tag(5, 5) + b"abcd"), True),
    "wire type: group for the status": (in_span(IDS + group(15, tag(2, 0) + b"\x01")), True),
    "wire type: bytes for the kind": (in_span(IDS + ld(6, BAD)), True),
    "wire type: varint for the trace_id": (in_span(IDS + tag(1, 0) + b"\x05"), True),
    "wire type: varint for resource_spans": (tag(1, 0) + b"\x05", True),
    "wire type: group for scope_spans": (ld(1, group(2, ld(2, BAD))), True),
    "wire type: group for a span, with a bad inner wire type": (ld(1, ld(2, group(2, tag(1, 6)))), False),
    # unknown fields of every wire type
    "unknown: varint": (in_span(IDS + tag(40, 0) + b"\xff" * 9 + b"\x7f"), True),
    "unknown: fixed64": (in_span(IDS + tag(40, 1) + b"12345678"), True),
    "unknown: fixed32": (in_span(IDS + tag(40, 5) + b"1234"), True),
    "unknown: length-delimited": (in_span(IDS + ld(40, b"\x00\x04\xff")), True),
    "unknown: group with every wire type inside": (
        in_span(
            IDS
            + group(
                40, tag(1, 0) + b"\x01" + tag(2, 1) + b"8" * 8 + ld(3, b"x") + group(4) + tag(5, 5) + b"4444"
            )
        ),
        True,
    ),
    "unknown: wire type 6": (in_span(IDS + tag(40, 6)), False),
    "unknown: wire type 7": (in_span(IDS + tag(40, 7)), False),
    "unknown: wire type 6 inside a group": (in_span(IDS + group(40, tag(1, 6))), False),
    "unknown: in the request": (ld(7, b"x") + tag(8, 0) + b"\x01" + group(9), True),
    # lengths, varints, tags
    "length past the end: name": (in_span(IDS + tag(5, 2) + varint(50) + b"abc"), False),
    "length past the end: attribute": (in_span(IDS + tag(9, 2) + varint(3) + b"\x0a"), False),
    "length past its message, within the body": (
        ld(1, ld(2, tag(2, 2) + varint(10) + b"ab")) + b"x" * 20,
        False,
    ),
    "length past the end: resource_spans": (tag(1, 2) + varint(2**31 - 1), False),
    "length past the end inside a group": (in_span(IDS + group(40, tag(1, 2) + varint(100))), False),
    "length of 5 bytes": (in_span(IDS + tag(5, 2) + b"\x82\x80\x80\x80\x00ab"), True),
    "length of 6 bytes": (in_span(IDS + tag(5, 2) + b"\x82\x80\x80\x80\x80\x00ab"), False),
    "varint of 10 bytes": (in_span(IDS + tag(6, 0) + b"\xff" * 9 + b"\x01"), True),
    "varint of 11 bytes": (in_span(IDS + tag(6, 0) + b"\xff" * 10 + b"\x01"), False),
    "truncated varint": (in_span(IDS + tag(6, 0) + b"\xff"), False),
    "truncated fixed64": (in_span(IDS + tag(7, 1) + b"123"), False),
    "truncated fixed32": (in_span(IDS + tag(16, 5) + b"12"), False),
    "tag of 5 bytes": (in_span(IDS + b"\x80\x80\x80\x80\x0f\x01"), True),
    "tag of 5 bytes above 2**32 - 1": (in_span(IDS + b"\x80\x80\x80\x80\x10\x01"), False),
    "tag of 6 bytes": (in_span(IDS + b"\x88\x80\x80\x80\x80\x00\x01"), False),
    "redundant tag encoding": (b"\x8a\x00" + varint(0), True),
    "highest field number": (in_span(IDS + varint((2**29 - 1) << 3) + b"\x01"), True),
    # non-repeated messages repeated: upb merges them
    "status twice": (in_span(IDS + ld(15, ld(2, b"a")) + ld(15, tag(3, 0) + b"\x02")), True),
    "status twice, the second invalid": (in_span(IDS + ld(15, ld(2, b"a")) + ld(15, ld(2, BAD))), False),
    "resource twice": (ld(1, ld(1, ld(1, ld(1, b"a"))) + ld(2, ld(2, IDS)) + ld(1, ld(2, b"\x03"))), True),
    "scope twice": (ld(1, ld(2, ld(1, ld(1, b"s")) + ld(2, IDS) + ld(1, ld(2, b"v")))), True),
    "attribute value twice": (
        in_span(IDS + ld(9, ld(1, b"k") + ld(2, ld(1, b"a")) + ld(2, tag(3, 0) + b"\x01"))),
        True,
    ),
    "empty body": (b"", True),
}


@pytest.fixture(scope="module")
def native():
    return native_module()


@pytest.mark.parametrize(("body", "valid"), CASES.values(), ids=CASES.keys())
def test_refuses_what_upb_refuses(native, body, valid):
    try:
        ExportTraceServiceRequest.FromString(body)
        upb_valid = True
    except DecodeError:
        upb_valid = False
    assert upb_valid is valid, "upb's behaviour changed: update the C scanner and this case"
    if valid:
        assert_split_matches(native, body, TABLE)
    else:
        with pytest.raises(ValueError, match="invalid ExportTraceServiceRequest: .* at byte"):
            native.split(body, TABLE.table(native), 1024)


def test_a_valid_request_after_an_invalid_one(native):
    """No state survives a refused body."""
    table = TABLE.table(native)
    with pytest.raises(ValueError):
        native.split(in_span(IDS + attr(BAD)), table, 1024)
    assert len(native.split(in_span(IDS), table, 1024)[1]) == 40
