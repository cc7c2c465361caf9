"""The mapper: OTLP spans in, request records out. Pure: no I/O, no clock, no globals.

``map_request`` walks one ``ExportTraceServiceRequest``: every span's attributes are scanned once
against the compiled conventions (one dict lookup per attribute; values are converted only for
the sources that win). Spans that are LLM calls become ``RequestRecord``s; user, session and
properties missing on an LLM span are inherited from its ancestors in the same request, nearest
first, then from the resource. LLM spans that cannot be mapped are returned as ``Rejection``s
naming the problem; other spans are skipped.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, NamedTuple

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from user_metrics.ingest import conventions as c
from user_metrics.store.records import RequestRecord, SpanFact

STATUS_CODE_ERROR = 2
# Sanity bounds of one request, far above any real one. They keep every sum the store and its
# rollups make (BIGINT tokens, DECIMAL(18,9) cost, the cost computed from tokens) from overflowing.
_MAX_COST_USD = Decimal(1_000_000)
_MAX_TOKENS = 10**10


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
    # For each record: the hex id of the first ancestor not in this request when the record has
    # no user id and its ancestry is incomplete (it waits for that ancestor), else None.
    waiting_for: list[str | None] = field(default_factory=list)
    facts: list[SpanFact] = field(default_factory=list)  # every span's own identity, for later requests


class MappingError(ValueError):
    """A span is an LLM call but one of its attributes cannot be read."""


@dataclass(frozen=True)
class _Target:
    field: str
    rank: int
    json_key: str | None
    json_default: Any


@dataclass(frozen=True)
class Conventions:
    """The conventions table compiled for lookups, plus the operator's choices."""

    by_key: dict[str, tuple[_Target, ...]]
    property_prefixes: tuple[str, ...]
    bare_property_keys: dict[str, str]
    property_json_keys: frozenset[str]
    max_value_length: int
    max_properties: int
    max_span_attributes: int


def compile_conventions(
    bare_property_keys: Iterable[str] = (),
    max_value_length: int = 4096,
    max_properties: int = 64,
    max_span_attributes: int = 1024,
) -> Conventions:
    """Index ``conventions.FIELDS`` by attribute key. Done once at start-up."""
    by_key: dict[str, list[_Target]] = {}
    for field_name, sources in c.FIELDS.items():
        for rank, source in enumerate(sources):
            by_key.setdefault(source.key, []).append(
                _Target(field_name, rank, source.json_key, source.json_default)
            )
    bare = {k: k.lower() for k in bare_property_keys}
    clash = [k for k in bare if k in by_key or k.startswith(c.PROPERTY_PREFIXES)]
    if clash:
        raise ValueError(f"property keys {clash} already have a meaning in the conventions table")
    return Conventions(
        by_key={k: tuple(v) for k, v in by_key.items()},
        property_prefixes=c.PROPERTY_PREFIXES,
        bare_property_keys=bare,
        property_json_keys=frozenset(c.PROPERTY_JSON_KEYS),
        max_value_length=max_value_length,
        max_properties=max_properties,
        max_span_attributes=max_span_attributes,
    )


# ---- reading AnyValue -------------------------------------------------------------------------


def any_value(value: AnyValue) -> Any:
    """An OTLP ``AnyValue`` as a plain Python value (None when unset)."""
    which = value.WhichOneof("value")
    if which == "string_value":
        return value.string_value
    if which == "int_value":
        return value.int_value
    if which is None:
        return None
    if which == "array_value":
        return [any_value(v) for v in value.array_value.values]
    if which == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in value.kvlist_value.values}
    return getattr(value, which)


def _as_text(value: Any) -> str | None:
    if isinstance(value, list):  # http.request.header.* are string arrays
        value = value[0] if value else None
    if value is None or isinstance(value, (dict, bytes)):
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    text = value if isinstance(value, str) else str(value)
    return text or None


def _as_count(value: Any, key: str) -> int:
    if isinstance(value, bool):
        raise MappingError(f"{key} is not a token count: {value!r}")
    if isinstance(value, int):
        count = value
    elif isinstance(value, float):
        if not math.isfinite(value) or value != int(value):
            raise MappingError(f"{key} is not a whole token count: {value!r}")
        count = int(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise MappingError(f"{key} is not a number: {value[:64]!r}") from None
        if not math.isfinite(number) or number != int(number):
            raise MappingError(f"{key} is not a whole token count: {value[:64]!r}")
        count = int(number)
    else:
        raise MappingError(f"{key} is not a token count: {str(value)[:64]}")
    if count < 0:
        raise MappingError(f"{key} is negative: {count}")
    if count > _MAX_TOKENS:
        raise MappingError(f"{key} is too large for one request: {count}")
    return count


def _as_cost(value: Any, key: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise MappingError(f"{key} is not a cost: {str(value)[:64]}")
    try:
        cost = Decimal(str(value).strip())
    except InvalidOperation:
        raise MappingError(f"{key} is not a number: {str(value)[:64]!r}") from None
    if not cost.is_finite() or cost < 0 or cost > _MAX_COST_USD:
        raise MappingError(f"{key} is not a cost in USD: {str(value)[:64]}")
    return cost


def _as_bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value != 0
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return None


_SURROGATE = re.compile("[\ud800-\udfff]")  # json.loads joins valid pairs: what is left is lone


def _without_surrogates(value: Any) -> Any:
    """A decoded JSON value with lone surrogates (from ``\\ud800`` escapes) replaced by U+FFFD."""
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, list):
        return [_without_surrogates(v) for v in value]
    if isinstance(value, dict):
        return {_without_surrogates(k): _without_surrogates(v) for k, v in value.items()}
    return value


# ---- scanning one attribute list ---------------------------------------------------------------


class _Scan:
    """The convention hits of one attribute list; values converted on demand."""

    __slots__ = ("hits", "prefixed", "bare", "json_cache", "dropped")

    def __init__(self) -> None:
        self.hits: dict[str, list[tuple[_Target, str, AnyValue]]] = {}
        self.prefixed: list[tuple[str, AnyValue]] = []
        self.bare: list[tuple[str, AnyValue]] = []
        self.json_cache: dict[str, Any] = {}
        self.dropped = 0  # attributes beyond the limit, not read

    def has(self, field_name: str) -> bool:
        return field_name in self.hits

    def raw(self, field_name: str) -> Iterable[tuple[str, Any]]:
        """(source key, Python value) of each present source of a field, best first."""
        candidates = self.hits.get(field_name)
        if not candidates:
            return
        if len(candidates) > 1:
            candidates.sort(key=lambda hit: hit[0].rank)
        for target, key, value in candidates:
            json_key = target.json_key
            if json_key is None:
                yield key, any_value(value)
                continue
            decoded = self._json(key, value)
            if isinstance(decoded, dict):
                if json_key in decoded:
                    yield f"{key}[{json_key}]", decoded[json_key]
                elif target.json_default is not None:
                    yield f"{key}[{json_key}]", target.json_default

    def _json(self, key: str, value: AnyValue) -> Any:
        if key not in self.json_cache:
            decoded: Any = None
            if value.WhichOneof("value") == "string_value":
                text = value.string_value
                try:
                    decoded = json.loads(text)
                except (ValueError, RecursionError):  # not JSON, or nested too deep to be ours
                    decoded = None
                if "\\u" in text:  # JSON escapes can spell lone surrogates, which cannot be stored
                    decoded = _without_surrogates(decoded)
            elif value.WhichOneof("value") == "kvlist_value":
                decoded = any_value(value)
            self.json_cache[key] = decoded
        return self.json_cache[key]

    def _single(self, field_name: str) -> tuple[bool, Any]:
        """(True, value) when the field has one plain source: the common case, without a generator."""
        candidates = self.hits.get(field_name)
        if candidates is None:
            return True, None
        if len(candidates) == 1:
            target, _key, value = candidates[0]
            if target.json_key is None:
                return True, any_value(value)
        return False, None

    def first(self, field_name: str, convert: Callable[[Any], Any]) -> Any:
        """The first source of a field that ``convert`` turns into something other than None."""
        simple, value = self._single(field_name)
        if simple:
            return convert(value)
        for _key, value in self.raw(field_name):
            converted = convert(value)
            if converted is not None:
                return converted
        return None

    def text(self, field_name: str) -> str | None:
        return self.first(field_name, _as_text)  # type: ignore[no-any-return]

    def count(self, field_name: str) -> int | None:
        simple, value = self._single(field_name)
        if simple and (value is None or (type(value) is int and 0 <= value <= _MAX_TOKENS)):
            return value  # the common case; anything else gets _as_count's checks and messages
        for key, value in self.raw(field_name):
            if value is None or value == "":
                continue
            return _as_count(value, key)
        return None

    def properties(self, conv: Conventions) -> dict[str, str]:
        """Custom properties of this attribute list (names lower-cased, earliest source wins)."""
        found: dict[str, tuple[int, str]] = {}
        prefixes = conv.property_prefixes
        for key, value in self.prefixed:
            for rank, prefix in enumerate(prefixes):
                if key.startswith(prefix):
                    name = key[len(prefix) :].lower()
                    if name and name not in c.PROPERTY_EXCLUDED:
                        _offer(found, name, rank, any_value(value))
                    break
        json_rank = len(prefixes)
        for key, value in self.bare:
            if key in conv.property_json_keys:
                decoded = self._json(key, value)
                if isinstance(decoded, dict):
                    for name, item in decoded.items():
                        if not isinstance(item, (dict, list)):
                            _offer(found, str(name).lower(), json_rank, item)
            else:
                _offer(found, conv.bare_property_keys[key], json_rank + 1, any_value(value))
        return {name: text for name, (_rank, text) in found.items()}


def _offer(found: dict[str, tuple[int, str]], name: str, rank: int, value: Any) -> None:
    if isinstance(value, list) and len(value) == 1 and not isinstance(value[0], (list, dict)):
        value = value[0]  # http.request.header.* values are one-element string arrays
    if isinstance(value, list):
        text: str | None = json.dumps(value, ensure_ascii=False, default=str)
    else:
        text = _as_text(value)
    if text is None:
        return
    current = found.get(name)
    if current is None or rank < current[0]:
        found[name] = (rank, text)


def scan_attributes(attributes: Sequence[Any], conv: Conventions) -> _Scan:
    """One pass over an attribute list: keep the keys the conventions know.

    Only the first ``conv.max_span_attributes`` attributes are read (``_Scan.dropped`` says how
    many more there were), so one span cannot make a request arbitrarily slow to map.
    """
    scan = _Scan()
    if len(attributes) > conv.max_span_attributes:
        scan.dropped = len(attributes) - conv.max_span_attributes
        attributes = attributes[: conv.max_span_attributes]
    hits = scan.hits
    get = conv.by_key.get
    prefixes = conv.property_prefixes
    bare = conv.bare_property_keys
    json_keys = conv.property_json_keys
    for kv in attributes:
        key = kv.key
        targets = get(key)
        if targets is not None:
            value = kv.value
            for target in targets:
                bucket = hits.get(target.field)
                if bucket is None:
                    hits[target.field] = [(target, key, value)]
                else:
                    bucket.append((target, key, value))
            if key in json_keys:
                scan.bare.append((key, value))
        elif key.startswith(prefixes):
            scan.prefixed.append((key, kv.value))
        elif key in bare or key in json_keys:
            scan.bare.append((key, kv.value))
    return scan


# ---- identity (inherited) ----------------------------------------------------------------------


class _Identity(NamedTuple):
    user_id: str | None
    session_id: str | None
    properties: dict[str, str]
    parent: bytes


def _identity(scan: _Scan, conv: Conventions, parent: bytes) -> _Identity:
    return _Identity(scan.text("user_id"), scan.text("session_id"), scan.properties(conv), parent)


def _declared_operation(scan: _Scan) -> str | None:
    operation = scan.text("operation")
    return operation.lower() if operation is not None else None


def _is_llm_call(scan: _Scan, operation: str | None) -> bool:
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
    has_model = scan.has("response_model") or scan.has("request_model")
    has_tokens = any(scan.has(f) for f in c.TOKEN_FIELDS)
    return has_model and has_tokens


def _operation(scan: _Scan, declared: str | None) -> str | None:
    """The declared operation, else one derived from an OpenInference/Langfuse kind, normalised."""
    operation = declared
    if operation is None:
        kind = scan.text("openinference_kind") or scan.text("langfuse_type")
        operation = kind.lower() if kind is not None else None
    return c.OPERATION_ALIASES.get(operation, operation) if operation is not None else None


def _provider(scan: _Scan) -> str | None:
    provider = scan.text("provider")
    if provider is None:
        return None
    provider = provider.strip().lower()
    return c.PROVIDER_ALIASES.get(provider, provider)


# ---- the request walk --------------------------------------------------------------------------


# How many spans the mapper reads between two calls of its ``pause`` hook.
PAUSE_EVERY = 256


def map_request(
    request: ExportTraceServiceRequest,
    conv: Conventions,
    *,
    now_unix_nano: int,
    pause: Callable[[], None] | None = None,
) -> MappedRequest:
    """Map every LLM span of one Export request to a record (or a rejection).

    ``now_unix_nano`` bounds start times: a span that starts more than a day after it is rejected.
    ``pause``, when given, is called every ``PAUSE_EVERY`` spans (the caller may let others run).
    """
    steps = 0
    out = MappedRequest()
    future_limit = now_unix_nano + 86_400 * 10**9
    # (trace_id, span_id) -> identity facts of every span, for inheritance within the request.
    identities: dict[tuple[bytes, bytes], _Identity] = {}
    pending: list[tuple[Any, _Scan, str | None, _Identity, _Identity, str | None, str | None]] = []

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
            for span in scope_spans.spans:
                steps += 1
                if pause is not None and steps % PAUSE_EVERY == 0:
                    pause()
                try:
                    scan = scan_attributes(span.attributes, conv)
                    out.dropped_attributes += scan.dropped
                    identity = _identity(scan, conv, span.parent_span_id)
                    identities[(span.trace_id, span.span_id)] = identity
                    declared = _declared_operation(scan)
                    is_llm = _is_llm_call(scan, declared)
                    operation = _operation(scan, declared) if is_llm else None
                    if _valid_ids(span.trace_id, span.span_id):
                        out.facts.append(_fact(span, identity, conv))
                        if not is_llm:  # an LLM span's cut is counted once, on its record
                            out.dropped_properties += max(0, len(identity.properties) - conv.max_properties)
                except Exception as exc:  # noqa: BLE001 - a bug rejects this span, not the request
                    out.rejected.append(_internal(span, exc, "the span"))
                    continue
                if is_llm:
                    context = (resource_identity, service_name, environment)
                    pending.append((span, scan, operation, identity, *context))
                else:
                    out.skipped += 1

    seen: set[tuple[bytes, bytes]] = set()
    for span, scan, operation, identity, resource_identity, service_name, environment in pending:
        key = (span.trace_id, span.span_id)
        if key in seen:  # the same span twice in one request is one call
            continue
        seen.add(key)
        steps += 1
        if pause is not None and steps % PAUSE_EVERY == 0:
            pause()
        try:
            user_id, session_id, properties, resume = _inherit(span, identity, resource_identity, identities)
            record = _record(
                span, scan, operation, user_id, session_id, properties, service_name, environment
            )
            _check_time(span, future_limit)
            record = _bounded(record, conv, out)
        except MappingError as exc:
            out.rejected.append(Rejection(span.trace_id.hex(), span.span_id.hex(), span.name[:128], str(exc)))
            continue
        except Exception as exc:  # noqa: BLE001 - a bug rejects this span, not the request
            out.rejected.append(_internal(span, exc, "the span"))
            continue
        out.records.append(record)
        out.waiting_for.append(resume.hex() if record.user_id is None and resume else None)
    return out


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
    """The record with text cut to max_value_length and at most max_properties properties."""
    record, cut = _truncate(record, conv.max_value_length)
    out.truncated_values += cut
    properties = _first_properties(record.properties, conv.max_properties, out)
    return record if properties is record.properties else record._replace(properties=properties)


def _first_properties(properties: dict[str, str], limit: int, out: MappedRequest) -> dict[str, str]:
    """At most ``limit`` properties, the first by name; the rest are counted as dropped."""
    if len(properties) <= limit:
        return properties
    out.dropped_properties += len(properties) - limit
    return {k: properties[k] for k in sorted(properties)[:limit]}


def _resource_names(attributes: Sequence[Any]) -> tuple[str | None, str | None]:
    service_name = environment = None
    env_rank = len(c.ENVIRONMENT_KEYS)
    for kv in attributes:
        if kv.key == c.SERVICE_NAME_KEY:
            service_name = _as_text(any_value(kv.value))
        elif kv.key in c.ENVIRONMENT_KEYS:
            rank = c.ENVIRONMENT_KEYS.index(kv.key)
            if rank < env_rank:
                env_rank, environment = rank, _as_text(any_value(kv.value))
    return service_name, environment


def _inherit(
    span: Any,
    own: _Identity,
    resource: _Identity,
    identities: dict[tuple[bytes, bytes], _Identity],
) -> tuple[str | None, str | None, dict[str, str], bytes | None]:
    """The span's own identity, completed from its ancestors (nearest first), then the resource.

    The last item is the id of the first ancestor missing from this request (None when the walk
    reached a root or went round a cycle): a later request may still bring it.
    """
    user_id, session_id = own.user_id, own.session_id
    chain: list[dict[str, str]] = [own.properties]
    parent = own.parent
    visited = {span.span_id}
    resume = None
    while parent and parent not in visited:
        visited.add(parent)
        ancestor = identities.get((span.trace_id, parent))
        if ancestor is None:
            resume = parent if _is_span_id(parent) else None
            break
        user_id = user_id or ancestor.user_id
        session_id = session_id or ancestor.session_id
        chain.append(ancestor.properties)
        parent = ancestor.parent
    user_id = user_id or resource.user_id
    session_id = session_id or resource.session_id
    chain.append(resource.properties)
    properties: dict[str, str] = {}
    for props in reversed(chain):  # nearer wins: apply farthest first
        properties.update(props)
    return user_id, session_id, properties, resume


def _is_span_id(value: bytes) -> bool:
    """8 bytes, not all zero: what OTLP calls a valid span id (anything else names no span)."""
    return len(value) == 8 and any(value)


def _parent_hex(parent: bytes) -> str | None:
    return parent.hex() if _is_span_id(parent) else None


def _valid_ids(trace_id: bytes, span_id: bytes) -> bool:
    return len(trace_id) == 16 and any(trace_id) and _is_span_id(span_id)


def _fact(span: Any, identity: _Identity, conv: Conventions) -> SpanFact:
    """What a later request's span may inherit from this one, bounded as records are."""
    limit = conv.max_value_length
    properties = identity.properties
    if len(properties) > conv.max_properties:
        properties = {k: properties[k] for k in sorted(properties)[: conv.max_properties]}
    return SpanFact(
        span.trace_id.hex(),
        span.span_id.hex(),
        _parent_hex(span.parent_span_id),
        identity.user_id[:limit] if identity.user_id else None,
        identity.session_id[:limit] if identity.session_id else None,
        {k[:limit]: v[:limit] for k, v in properties.items()},
    )


def _record(
    span: Any,
    scan: _Scan,
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
                cost = _as_cost(value, key)
                break
    parent = span.parent_span_id
    cache_read = scan.count("cache_read_tokens")
    cache_write = scan.count("cache_write_tokens")
    input_tokens, cache_added = _input_with_cache(scan.count("input_tokens"), cache_read, cache_write)
    return RequestRecord(
        trace_id=span.trace_id.hex(),
        span_id=span.span_id.hex(),
        parent_span_id=_parent_hex(parent),
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
        streaming=scan.first("streaming", _as_bool),
        properties=properties,
        cache_added_to_input=cache_added,
        server_address=scan.text("server_address"),
    )


def _input_with_cache(
    inp: int | None, cache_read: int | None, cache_write: int | None
) -> tuple[int | None, bool]:
    """Input tokens including cache (the stored convention), and whether cache had to be added.

    Anthropic's API counts input without cache, and several instrumentations pass that on. When
    the cache counts exceed the input count, or come without one, the input cannot have included
    them. (Exclusive input larger than its cache counts cannot be told apart, and is kept.)
    """
    cache = (cache_read or 0) + (cache_write or 0)
    if not cache or (inp is not None and cache <= inp):
        return inp, False
    total = (inp or 0) + cache
    if total > _MAX_TOKENS:
        raise MappingError(f"input tokens plus cache tokens are too many for one request: {total}")
    return total, True


def _check_time(span: Any, future_limit: int) -> None:
    start, end = span.start_time_unix_nano, span.end_time_unix_nano
    if start == 0:
        raise MappingError("span has no start time")
    if end < start:
        raise MappingError(f"span ends before it starts (start {start}, end {end} ns)")
    if start > future_limit:
        raise MappingError(f"span starts more than a day in the future (start {start} ns)")


_TEXT_FIELDS = (
    "user_id",
    "session_id",
    "service_name",
    "environment",
    "operation",
    "provider",
    "request_model",
    "response_model",
    "error_type",
    "server_address",
)


def _truncate(record: RequestRecord, limit: int) -> tuple[RequestRecord, int]:
    """Cut stored text values to ``limit`` characters; count how many were cut."""
    changes: dict[str, Any] = {}
    for name in _TEXT_FIELDS:
        value = getattr(record, name)
        if value is not None and len(value) > limit:
            changes[name] = value[:limit]
    props = record.properties
    if any(len(k) > limit or len(v) > limit for k, v in props.items()):
        changes["properties"] = {k[:limit]: v[:limit] for k, v in props.items()}
    if not changes:
        return record, 0
    return record._replace(**changes), len(changes)
