"""The mapper: OTLP spans in, request records out. Pure: no I/O, no clock, no globals.

``map_request`` walks one ``ExportTraceServiceRequest``: every span's attributes are scanned once
against the compiled conventions (``attributes.py``: one dict lookup per attribute; values are
converted only for the sources that win). Spans that are LLM calls become ``RequestRecord``s;
user, session and properties missing on an LLM span are inherited from its ancestors in the same
request, nearest first, then from the resource (``inheritance.py``). LLM spans that cannot be
mapped are returned as ``Rejection``s naming the problem; other spans are skipped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from user_metrics.ingest import conventions as c
from user_metrics.ingest import coverage_scan, dialects, plain_spans, record_bounds
from user_metrics.ingest.attributes import (
    Conventions,
    MappingError,
    Scan,
    any_value,
    as_cost,
    as_text,
    scan_attributes,
)
from user_metrics.ingest.call_values import check_time, input_with_cache
from user_metrics.ingest.framework_spans import framework_duplicates
from user_metrics.ingest.inheritance import Identity, Wait, fact, inherit, parent_hex, valid_ids, wait
from user_metrics.store.records import RequestRecord, SpanFact

STATUS_CODE_ERROR = 2


class Rejection(NamedTuple):
    """An LLM span that could not be mapped, and why.

    ``internal`` marks an unexpected error (a bug, not bad input): the span is rejected alone,
    the rest of its request is stored, and the front-end logs it.
    """

    trace_id: str
    span_id: str
    name: str
    reason: str
    internal: bool = False


INTERNAL_ERROR = "internal error"


@dataclass
class MappedRequest:
    """What one Export request maps to."""

    records: list[RequestRecord] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    skipped: int = 0  # spans that are not LLM calls
    truncated_values: int = 0  # attribute values cut to the length limit
    dropped_properties: int = 0  # properties beyond max_properties on one record (or one fact)
    dropped_attributes: int = 0  # attributes beyond max_span_attributes on one span or resource
    framework_cut: int = 0  # framework spans not compared with all their candidates (MAX_CANDIDATES)
    # For each record: why it waits in ``pending`` (``Wait``), or None when it is final.
    waits: list[Wait | None] = field(default_factory=list)
    facts: list[SpanFact] = field(default_factory=list)  # every span's own identity, for later requests
    coverage: coverage_scan.Tally = field(default_factory=coverage_scan.Tally)  # the coverage report's
    plain: plain_spans.PlainFacts | None = None  # the plain spans' facts (``batches.plain_facts_table``)


# ---- what a span is -----------------------------------------------------------------------------


def _identity(scan: Scan, conv: Conventions, parent: bytes) -> Identity:
    return Identity(
        scan.text("user_id"),
        scan.text("session_id"),
        scan.properties(conv),
        parent,
        scan.text("conversation_id"),
    )


def _declared_operation(scan: Scan) -> str | None:
    operation = scan.text("operation")
    return operation.lower() if operation is not None else None


def _is_llm_call(scan: Scan, operation: str | None) -> bool:
    """``operation`` is the declared one (gen_ai.operation.name / llm.request.type), lower-cased."""
    if operation is not None:
        if operation in c.MODEL_OPERATIONS:
            return True
        if operation in c.NON_MODEL_OPERATIONS:
            return False
    for field_name, values in c.LLM_KIND_VALUES.items():
        kind = scan.text(field_name)
        if kind is not None and kind.lower() in values:
            return True
    return (scan.has("response_model") or scan.has("request_model")) and dialects.has_tokens(scan)


def _operation(scan: Scan, declared: str | None) -> str | None:
    """The declared operation, else one derived from an OpenInference/Langfuse kind, normalised."""
    operation = declared
    if operation is None:
        kind = scan.text("openinference_kind") or scan.text("langfuse_type")
        operation = kind.lower() if kind is not None else None
    return c.OPERATION_ALIASES.get(operation, operation) if operation is not None else None


def _provider(scan: Scan) -> str | None:
    return dialects.provider(scan)


class _Call(NamedTuple):
    is_llm: bool
    operation: str | None
    judged: bool  # a rule decided (a call, or a library's non-call): the coverage report does not list it
    declared: str | None  # the declared operation, lower-cased


# The fields the mapper reads of a span that is no LLM call: its identity, whether it is a call
# (``_call``), whether it looks like one (``coverage_scan.looks_like_llm``). A span whose keys give
# none of them maps as a plain span (``span_split.scan_table``): the rest is read on records only.
DECIDING_FIELDS = frozenset(
    {"user_id", "session_id", "conversation_id", "operation", "ai_sdk_operation", "request_model"}
    | {"response_model", *c.LLM_KIND_VALUES, *c.TOKEN_FIELDS, *c.LLM_LIKE_FIELDS}
)


def _call(scan: Scan) -> _Call:
    """Whether a span is a model call, and its operation: a library's own verdict, else the rules."""
    declared = _declared_operation(scan)
    verdict = dialects.ai_sdk_verdict(scan)
    if verdict is not None:
        return _Call(verdict.is_call, verdict.operation, True, declared)
    is_llm = _is_llm_call(scan, declared)
    return _Call(is_llm, _operation(scan, declared) if is_llm else None, is_llm, declared)


# ---- the request walk --------------------------------------------------------------------------


# How many spans the mapper reads between two calls of its ``pause`` hook.
PAUSE_EVERY = 256


def map_request(
    request: ExportTraceServiceRequest,
    conv: Conventions,
    *,
    now_unix_nano: int,
    pause: Callable[[], None] | None = None,
    plain: plain_spans.PlainSpans | None = None,
) -> MappedRequest:
    """Map every LLM span of one Export request to a record (or a rejection).

    ``now_unix_nano`` bounds start times: a span that starts more than a day after it is rejected.
    ``pause``, when given, is called every ``PAUSE_EVERY`` spans (the caller may let others run).
    ``plain``: the spans the split took out of ``request`` (``span_split.py``); the result is the
    whole request's, theirs included (``plain_spans.py``).
    """
    steps = 0
    out = MappedRequest()
    future_limit = now_unix_nano + 86_400 * 10**9
    # (trace_id, span_id) -> identity facts of every span, for inheritance within the request.
    identities: dict[tuple[bytes, bytes], Identity] = {}
    if plain is not None:  # the plain spans' identities are looked up among their records
        identities = plain_spans.Identities(plain, request)
        out.skipped, out.dropped_attributes = plain.size, plain.dropped_attributes
    pending: list[tuple[Any, Scan, str | None, Identity, Identity, str | None, str | None]] = []
    sdk_spans: set[tuple[bytes, bytes]] = set()  # LLM spans a provider SDK made of its own
    framework: set[tuple[bytes, bytes]] = set()  # LLM spans of a framework (LangChain) around a call
    fact_at: dict[tuple[bytes, bytes], int] = {}  # where each span's fact is in out.facts

    for resource_spans in request.resource_spans:
        try:
            resource_scan = scan_attributes(resource_spans.resource.attributes, conv)
            out.dropped_attributes += resource_scan.dropped
            resource_identity = _identity(resource_scan, conv, b"")
            service_name, environment = _resource_names(resource_spans.resource.attributes)
        except Exception as exc:  # noqa: BLE001 - a bug rejects these spans, not the request
            for scope_spans in resource_spans.scope_spans:
                out.rejected.extend(_internal(span, exc, "its resource") for span in scope_spans.spans)
            continue
        for scope_spans in resource_spans.scope_spans:
            scope = out.coverage.scope(scope_spans.scope, service_name, conv.max_value_length)
            for span in scope_spans.spans:
                steps += 1
                if pause is not None and steps % PAUSE_EVERY == 0:
                    pause()
                try:
                    scan = scan_attributes(span.attributes, conv)
                    out.dropped_attributes += scan.dropped
                    identity = _identity(scan, conv, span.parent_span_id)
                    identities[(span.trace_id, span.span_id)] = identity
                    call = _call(scan)
                    is_llm, operation = call.is_llm, call.operation
                    if is_llm and dialects.superseded(span, scan):  # another span records this call
                        is_llm, operation = False, None
                    # A span a rule judged (an AI SDK wrapper, Logfire's superseded request span) is
                    # no surprise to the coverage report: not listed as skipped.
                    out.coverage.saw(span, scan, scope, call.judged, call.declared)
                    if valid_ids(span.trace_id, span.span_id):
                        fact_at[(span.trace_id, span.span_id)] = len(out.facts)
                        out.facts.append(fact(span, identity, conv))
                        if not is_llm:  # an LLM span's cut is counted once, on its record
                            out.dropped_properties += max(0, len(identity.properties) - conv.max_properties)
                except Exception as exc:  # noqa: BLE001 - a bug rejects this span, not the request
                    out.rejected.append(_internal(span, exc, "the span"))
                    continue
                if is_llm:
                    context = (resource_identity, service_name, environment)
                    pending.append((span, scan, operation, identity, *context))
                    if scope_spans.scope.name in c.PROVIDER_SDK_SCOPES:
                        sdk_spans.add((span.trace_id, span.span_id))
                    if scope_spans.scope.name in c.FRAMEWORK_SCOPES:
                        framework.add((span.trace_id, span.span_id))
                else:
                    out.skipped += 1

    # A provider SDK's own span of a call an instrumentation records first, and a framework's span
    # around a client instrumentation's span of the call (framework_spans.py): not calls of their own.
    absorbed = dialects.provider_sdk_duplicates([(p[0], p[1]) for p in pending], sdk_spans)
    seen = set(absorbed)
    paired = framework_duplicates(
        [p[0] for p in pending if (p[0].trace_id, p[0].span_id) not in seen], framework
    )
    seen |= paired.spans
    out.framework_cut += paired.cut
    out.skipped += len(seen)  # SDK and framework spans of a call in this request: the call is counted
    sdk_records = {}  # the call's span -> its SDK span's record, whose counts win (dialects.py)
    for span, scan, operation, *_ in (p for p in pending if (p[0].trace_id, p[0].span_id) in absorbed):
        with suppress(MappingError):
            sdk_records[span.trace_id, absorbed[span.trace_id, span.span_id]] = _record(
                span, scan, operation, None, None, {}, None, None
            )
    llm: dict[tuple[bytes, bytes], tuple[str, str, str | None]] = {}  # the LLM facts of the spans
    built: dict[tuple[bytes, bytes], tuple[Any, ...]] = {}  # each call once, in request order
    for p in pending:
        key = (p[0].trace_id, p[0].span_id)
        if key in absorbed:
            llm[key] = ("sdk", dialects.model_key(p[1]), absorbed[key].hex())
        if key in seen or key in built:  # the same span twice in one request is one call
            continue
        steps += 1
        if pause is not None and steps % PAUSE_EVERY == 0:
            pause()
        built[key] = (p, _built(p, identities, sdk_records, future_limit, sdk_spans, framework))
    # The wrappers among the calls: the instrumentation's span is the call, even one without
    # tokens (a failure), unless that span is rejected.
    wrappers = dialects.wrappers(
        dialects.Call(
            *key, p[0].parent_span_id, p[2], dialects.has_tokens(p[1]), not isinstance(r, Rejection)
        )
        for key, (p, r) in built.items()
    )
    out.skipped += len(wrappers)
    for key, (p, result) in built.items():
        if key in wrappers:
            continue
        if isinstance(result, Rejection):
            out.rejected.append(result)
            continue
        record, found, counterpart, sdk = result
        span, scan = p[0], p[1]
        record = _bounded(record, conv, out)
        out.records.append(out.coverage.stored(record, span, scan))  # the scope, for the coverage report
        out.waits.append(wait(record, found, counterpart))
        llm[key] = ("sdk" if sdk else "call", dialects.model_key(scan), None)
    limit = conv.max_value_length
    for key, (kind, model, by) in llm.items():
        if isinstance(identities, plain_spans.Identities) and identities.llm_on_plain(
            key, (kind, model[:limit], by)
        ):
            continue  # the key's last span is a plain one: its fact says it
        if key in fact_at:
            at = fact_at[key]
            out.facts[at] = out.facts[at]._replace(llm=kind, model=model[:limit], absorbed_by=by)
    if isinstance(identities, plain_spans.Identities):
        out.plain = identities.facts()
    return out


def _built(
    pending: tuple[Any, ...],
    identities: Any,
    sdk_records: dict[Any, RequestRecord],
    future_limit: int,
    sdk_spans: set[tuple[bytes, bytes]],
    framework: set[tuple[bytes, bytes]],
) -> tuple[RequestRecord, Any, bool, bool] | Rejection:
    """One call's record (before its bounds), inherited identity, whether it waits for its
    counterpart, and whether it is an SDK's span; or its rejection."""
    span, scan, operation, identity, resource_identity, service_name, environment = pending
    key = (span.trace_id, span.span_id)
    try:
        found = inherit(span, identity, resource_identity, identities)
        record = _record(
            span,
            scan,
            operation,
            found.user_id,
            found.session_id,
            found.properties,
            service_name,
            environment,
        )
        record = dialects.with_provider_sdk_counts(dialects.adjust(record, span, scan), sdk_records.get(key))
        check_time(span, future_limit)
        sdk = key in sdk_spans or key in framework  # the store pairs a framework span as an SDK span
        counterpart = sdk and dialects.sdk_span_waits(
            span, record.streaming, (span.trace_id, span.parent_span_id) in identities
        )
    except MappingError as exc:
        return Rejection(span.trace_id.hex(), span.span_id.hex(), span.name[:128], str(exc))
    except Exception as exc:  # noqa: BLE001 - a bug rejects this span, not the request
        return _internal(span, exc, "the span")
    return record, found, counterpart, sdk


def _internal(span: Any, exc: Exception, where: str) -> Rejection:
    """The rejection of a span that an unexpected error (a bug) stopped the mapper on."""
    return Rejection(
        bytes(span.trace_id).hex(),
        bytes(span.span_id).hex(),
        str(span.name)[:128],
        f"{INTERNAL_ERROR}: reading {where} failed: {type(exc).__name__}: {str(exc)[:200]}",
        internal=True,
    )


def _bounded(record: RequestRecord, conv: Conventions, out: MappedRequest) -> RequestRecord:
    """The record within its bounds (``record_bounds.py``), what was cut counted."""
    record, cut = record_bounds.truncate(record, conv.max_value_length)
    out.truncated_values += cut
    properties, dropped = record_bounds.first_properties(record.properties, conv.max_properties)
    out.dropped_properties += dropped
    return record if properties is record.properties else record._replace(properties=properties)


def _resource_names(attributes: Sequence[Any]) -> tuple[str | None, str | None]:
    service_name = environment = None
    env_rank = len(c.ENVIRONMENT_KEYS)
    for kv in attributes:
        if kv.key == c.SERVICE_NAME_KEY:
            service_name = as_text(any_value(kv.value))
        elif kv.key in c.ENVIRONMENT_KEYS:
            rank = c.ENVIRONMENT_KEYS.index(kv.key)
            if rank < env_rank:
                env_rank, environment = rank, as_text(any_value(kv.value))
    return service_name, environment


def _record(
    span: Any,
    scan: Scan,
    operation: str | None,
    user_id: str | None,
    session_id: str | None,
    properties: dict[str, str],
    service_name: str | None,
    environment: str | None,
) -> RequestRecord:
    if len(span.trace_id) != 16 or not any(span.trace_id):
        raise MappingError(f"trace id must be 16 non-zero bytes, got {len(span.trace_id)} bytes")
    if len(span.span_id) != 8 or not any(span.span_id):
        raise MappingError(f"span id must be 8 non-zero bytes, got {len(span.span_id)} bytes")
    error_type = scan.text("error_type")
    is_error = span.status.code == STATUS_CODE_ERROR or error_type is not None
    if is_error and error_type is None:
        error_type = span.status.message or None
    cost = None
    if scan.has("cost"):
        for key, value in scan.raw("cost"):
            if value is not None and value != "":
                cost = as_cost(value, key)
                break
    parent = span.parent_span_id
    cache_read = scan.count("cache_read_tokens")
    cache_write = scan.count("cache_write_tokens")
    input_tokens, cache_added = input_with_cache(scan.count("input_tokens"), cache_read, cache_write)
    return RequestRecord(
        trace_id=span.trace_id.hex(),
        span_id=span.span_id.hex(),
        parent_span_id=parent_hex(parent),
        start_time_unix_nano=span.start_time_unix_nano,
        duration_ms=(span.end_time_unix_nano - span.start_time_unix_nano) / 1e6,
        user_id=user_id,
        session_id=session_id,
        service_name=service_name,
        environment=environment,
        operation=operation,
        provider=_provider(scan),
        request_model=scan.text("request_model"),
        response_model=scan.text("response_model"),
        input_tokens=input_tokens,
        output_tokens=scan.count("output_tokens"),
        cache_read_tokens=cache_read,
        cache_write_tokens=cache_write,
        reasoning_tokens=scan.count("reasoning_tokens"),
        cost_usd=cost,
        cost_source="reported" if cost is not None else None,
        status="error" if is_error else "ok",
        error_type=error_type,
        streaming=dialects.streaming(scan, operation),
        properties=properties,
        cache_added_to_input=cache_added,
        server_address=scan.text("server_address"),
    )
