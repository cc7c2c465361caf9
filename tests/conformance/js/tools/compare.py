"""Map a capture's raw requests with the CURRENT mapper and compare with expected.jsonl.

Usage: PYTHONPATH=<src> python compare.py CAPTURE_DIR [...]
"""

import json
import sys
from collections import defaultdict
from pathlib import Path

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from user_metrics.ingest.attributes import compile_conventions
from user_metrics.ingest.mapping import map_request

FIELDS = [
    "counted_once",
    "user",
    "session",
    "properties",
    "request_model",
    "response_model",
    "provider",
    "operation",
    "input",
    "output",
    "cached",
    "reasoning",
    "status",
    "streaming",
]


def compare(cap: Path):
    conv = compile_conventions()
    records, rejected = [], []
    for p in sorted((cap / "raw").glob("*.pb")):
        m = map_request(ExportTraceServiceRequest.FromString(p.read_bytes()), conv, now_unix_nano=2**63 - 1)
        records += m.records
        rejected += m.rejected
    by_trace = defaultdict(list)
    for r in records:
        by_trace[r.trace_id].append(r)
    expected = [json.loads(x) for x in (cap / "expected.jsonl").read_text().splitlines()]
    score = {f: 0 for f in FIELDS}
    rows = []
    for e in expected:
        ls = e.get("llm_span") or {}
        recs = by_trace.get(ls.get("trace_id"), [])
        srv = e["server"]
        got = {}
        bad = {}
        rec = next((r for r in recs if r.span_id == ls.get("span_id")), None) or (recs[0] if recs else None)
        got["counted_once"] = len(recs) == 1
        if len(recs) != 1:
            bad["counted_once"] = f"{len(recs)} records: " + ",".join(f"{r.span_id[:6]}" for r in recs)
        if rec is None:
            rows.append((e["n"], e["kind"], "NOT STORED", {}))
            continue
        usage = e["usage_sent_to_client"] and not e["error"]
        want = {
            "user": e["user_id"],
            "session": e["session_id"],
            "properties": e["properties"] or {},
            "request_model": e["request_model"],
            "response_model": srv["response_model"] if not e["error"] else None,
            "provider": "openai",
            "operation": "embeddings" if e["kind"] == "embed" else "chat",
            "input": srv["prompt_tokens"] if usage else None,
            "output": srv["completion_tokens"] if usage else None,
            "cached": srv["cached_tokens"] if usage else None,
            "reasoning": srv["reasoning_tokens"] if usage else None,
            "status": "error" if e["error"] else "ok",
            "streaming": srv["stream"],
        }
        have = {
            "user": rec.user_id,
            "session": rec.session_id,
            "properties": rec.properties,
            "request_model": rec.request_model,
            "response_model": rec.response_model,
            "provider": rec.provider,
            "operation": rec.operation,
            "input": rec.input_tokens,
            "output": rec.output_tokens,
            "cached": rec.cache_read_tokens,
            "reasoning": rec.reasoning_tokens,
            "status": rec.status,
            "streaming": rec.streaming,
        }
        for f, w in want.items():
            h = have[f]
            ok = h == w or (f in ("cached", "reasoning", "output") and w is None and h in (None, 0))
            if f == "streaming" and h is None:
                ok = True  # not reported is acceptable
            if f == "response_model" and e["error"]:
                ok = True
            if ok:
                score[f] += 1
            else:
                bad[f] = f"{h!r} (want {w!r})"
        if len(recs) == 1:
            score["counted_once"] += 1
        extra = ""
        if rec.status == "error":
            extra = f" error_type={rec.error_type!r}"
        rows.append(
            (e["n"], e["kind"], f"span={rec.span_id == ls.get('span_id')}{extra} cost={rec.cost_usd}", bad)
        )
    stored_ids = {r.span_id for r in records}
    exp_ids = {(e.get("llm_span") or {}).get("span_id") for e in expected}
    print(
        f"== {cap.name}: {len(records)} records, {len(rejected)} rejected, expected 12; "
        f"records on non-LLM spans: {len(stored_ids - exp_ids)}"
    )
    print("   score: " + ", ".join(f"{f} {score[f]}/{len(expected)}" for f in FIELDS))
    for n, kind, note, bad in rows:
        print(
            f"   #{n:<2} {kind:<14} {note}  "
            + ("; ".join(f"{k}: {v}" for k, v in bad.items()) or "all right")
        )
    return score


if __name__ == "__main__":
    for d in sys.argv[1:]:
        compare(Path(d))
