"""Writes one run as a capture directory under tests/captures/ (format: tests/captures/README.md),
which tests/ingest/test_captures.py replays."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from spans import ancestors

from user_metrics.cli.main import _parser
from user_metrics.settings import CONVENTIONS, SPECS, load_settings

# A session id a library makes itself (pydantic-ai: a new one per agent run), which the service
# takes for the session when the application names none.
CONVERSATION_ID = "gen_ai.conversation.id"


def _lines(rows: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(r, sort_keys=True, default=str) + "\n" for r in rows)


def expected_rows(
    calls: list[dict[str, Any]],
    intended: list[dict[str, Any]],
    picks: list[dict[str, Any]],
    spans: list[dict[str, Any]],
    verdicts: list[Any],
) -> list[dict[str, Any]]:
    by_n = {i["n"]: i for i in intended}
    gaps: dict[int, set[str]] = {}
    for v in verdicts:
        if v.state == "lib":
            gaps.setdefault(v.n, set()).add(v.field)
    out = []
    for call, pick in zip(calls, picks, strict=True):
        gt, span = pick["gt"] or {}, pick["span"]
        chain = ancestors(span, spans) if span else []
        own = [
            s["attributes"][CONVERSATION_ID]
            for s in ([span] if span else []) + chain
            if CONVERSATION_ID in s["attributes"]
        ]
        out.append(
            {
                "n": call["n"],
                "kind": call["kind"],
                "provider": call["provider"],
                "user_id": call["user"],
                "session_id": call["session"],
                # the library's own session where the application set none
                "library_session_id": own[0] if own and not call["session"] else None,
                "properties": call["properties"],
                "request_model": call["model"],
                "user_param_sent": bool(call["user"]),
                "http_status": gt.get("status"),
                "error": gt.get("status") != 200,
                "usage_sent_to_client": bool(gt.get("usage_reported")),
                "client_error": by_n.get(call["n"], {}).get("error"),
                "server": {
                    "prompt_tokens": gt.get("prompt_tokens"),
                    "completion_tokens": gt.get("completion_tokens"),
                    "cached_tokens": gt.get("cached_tokens"),
                    "cache_write_tokens": gt.get("cache_write_tokens"),
                    "reasoning_tokens": gt.get("reasoning_tokens"),
                    "total_tokens": (gt["prompt_tokens"] + (gt.get("completion_tokens") or 0))
                    if gt.get("prompt_tokens")
                    else None,
                    "response_model": gt.get("response_model"),
                    "response_id": gt.get("response_id"),
                    "stream": gt.get("stream"),
                    "include_usage": gt.get("include_usage"),
                    "user": gt.get("user"),
                },
                "llm_span": None
                if span is None
                else {
                    "trace_id": span["trace_id"],
                    "span_id": span["span_id"],
                    "parent_span_id": span["parent_span_id"],
                    "name": span["name"],
                    "kind": span["kind"],
                    "status": span["status"]["code"],
                    "ancestors": [a["name"] for a in chain],
                },
                "reported": pick["reported"],
                # The compare's fields (compare.FIELDS) whose true value the library did not send.
                "library_gaps": sorted(gaps.get(call["n"], ())),
            }
        )
    return out


def conventions_settings(service_args: list[str]) -> dict[str, list[str]]:
    """The [conventions] settings among a service's command-line arguments, as `serve` reads them
    (a capture replayed in CI needs them to be read as the live service read it)."""
    args = _parser().parse_args(["serve", *service_args])
    settings = load_settings({spec.name: getattr(args, spec.name) for spec in SPECS}, environ={})
    chosen = (spec.name for spec in SPECS if spec.section == CONVENTIONS)
    return {name: list(getattr(settings, name)) for name in chosen if getattr(settings, name)}


def attribute_keys(spans: list[dict[str, Any]]) -> dict[str, Any]:
    keys: dict[str, Any] = {}
    for s in spans:
        for k, v in s["attributes"].items():
            entry = keys.setdefault(k, {"count": 0, "types": set(), "span_names": set(), "example": v})
            entry["count"] += 1
            entry["types"].add(type(v).__name__)
            entry["span_names"].add(s["name"])
    return {
        k: {**e, "types": sorted(e["types"]), "span_names": sorted(e["span_names"])}
        for k, e in sorted(keys.items())
    }


def write(
    dest: Path,
    library: Any,
    versions: dict[str, str],
    freeze: str,
    how: str,
    bodies: list[bytes],
    spans: list[dict[str, Any]],
    truth: list[dict[str, Any]],
    intended: list[dict[str, Any]],
    expected: list[dict[str, Any]],
) -> None:
    if dest.exists():
        shutil.rmtree(dest)
    (dest / "raw").mkdir(parents=True)
    (dest / "json").mkdir()
    for i, body in enumerate(bodies, 1):
        (dest / "raw" / f"traces-{i:04d}.pb").write_bytes(body)
        message = ExportTraceServiceRequest.FromString(body)
        (dest / "json" / f"traces-{i:04d}.json").write_text(json_format.MessageToJson(message) + "\n")
    (dest / "spans.json").write_text(json.dumps(spans, indent=1, default=str) + "\n")
    (dest / "attribute_keys.json").write_text(json.dumps(attribute_keys(spans), indent=1, default=str) + "\n")
    (dest / "ground_truth.jsonl").write_text(_lines(truth))
    (dest / "intended.jsonl").write_text(_lines(intended))
    (dest / "expected.jsonl").write_text(_lines(expected))
    node = library.kind == "node"
    (dest / ("npm-ls.txt" if node else "pip-freeze.txt")).write_text(freeze)
    conventions = conventions_settings(library.service_args)
    if conventions:
        (dest / "settings.json").write_text(json.dumps({CONVENTIONS: conventions}, indent=1) + "\n")
    names = Counter((s["name"], s["kind"], s["scope"]["name"]) for s in spans)
    table = "\n".join(f"| `{n}` | {k} | `{sc}` | {c} |" for (n, k, sc), c in sorted(names.items()))
    version_lines = "\n".join(f"- `{k}{'@' if node else '=='}{v}`" for k, v in versions.items())
    (dest / "README.md").write_text(
        f"# {library.name}\n\nRecorded by `tests/conformance/run.py --record` (the live conformance suite): the "
        f"library's release installed in its own environment made the 12 calls of `tests/captures/README.md` "
        f"({library.provider} API flavour) against the suite's fake provider; every OTLP Export request it sent "
        f"is in `raw/`, byte for byte (decompressed; OTLP/JSON converted to protobuf).\n\n## Versions\n\n"
        f"{version_lines}\n\n## How user, session and properties were attached\n\n{how.strip()}\n\n"
        f"Scenario: `tests/conformance/scenarios/{library.script}`.\n\n## Spans\n\n"
        f"| span name | kind | instrumentation scope | count |\n|---|---|---|---|\n{table}\n\n"
        f"`expected.jsonl` names, per call, the span that represents it (`llm_span`) and, in `reported`, the "
        f"attributes where the library reported each fact (found by matching values against ground truth).\n"
    )
