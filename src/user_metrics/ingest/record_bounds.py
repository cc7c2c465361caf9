"""The bounds on one stored record: text values cut to ``max_value_length`` characters, and at
most ``max_properties`` properties (the first by name). Each cut is returned to be counted."""

from __future__ import annotations

from typing import Any

from user_metrics.store.records import RequestRecord

# The record's text fields (properties are cut apart, names and values alike).
TEXT_FIELDS = (
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


def truncate(record: RequestRecord, limit: int) -> tuple[RequestRecord, int]:
    """Cut stored text values to ``limit`` characters; count how many were cut."""
    changes: dict[str, Any] = {}
    for name in TEXT_FIELDS:
        value = getattr(record, name)
        if value is not None and len(value) > limit:
            changes[name] = value[:limit]
    props = record.properties
    if any(len(k) > limit or len(v) > limit for k, v in props.items()):
        changes["properties"] = {k[:limit]: v[:limit] for k, v in props.items()}
    if not changes:
        return record, 0
    return record._replace(**changes), len(changes)


def first_properties(properties: dict[str, str], limit: int) -> tuple[dict[str, str], int]:
    """At most ``limit`` properties, the first by name, and how many were dropped."""
    if len(properties) <= limit:
        return properties, 0
    return {k: properties[k] for k in sorted(properties)[:limit]}, len(properties) - limit
