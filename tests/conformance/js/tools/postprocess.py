"""Build json/, spans.json, attribute_keys.json, expected.jsonl and README.md for one capture dir.

Usage: postprocess.py CAPTURE_DIR LLM_SPAN_NAMES(comma-separated; prefix 're:' for a regex) TITLE NOTES_FILE PKGS(comma)
Run with /work/main/.venv/bin/python (has opentelemetry-proto).
"""

from __future__ import annotations

import json
import re
import sys
from collections import Counter, defaultdict
from pathlib import Path

from google.protobuf.json_format import MessageToJson
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

KIND = {
    0: "SPAN_KIND_UNSPECIFIED",
    1: "SPAN_KIND_INTERNAL",
    2: "SPAN_KIND_SERVER",
    3: "SPAN_KIND_CLIENT",
    4: "SPAN_KIND_PRODUCER",
    5: "SPAN_KIND_CONSUMER",
}
STATUS = {0: "STATUS_CODE_UNSET", 1: "STATUS_CODE_OK", 2: "STATUS_CODE_ERROR"}


def anyval(v):
    k = v.WhichOneof("value")
    if k == "array_value":
        return [anyval(x) for x in v.array_value.values]
    if k == "kvlist_value":
        return {x.key: anyval(x.value) for x in v.kvlist_value.values}
    if k == "bytes_value":
        return v.bytes_value.hex()
    return getattr(v, k) if k else None


def load(cap: Path):
    spans, types = [], defaultdict(set)
    (cap / "json").mkdir(exist_ok=True)
    for p in sorted((cap / "raw").glob("*.pb")):
        req = ExportTraceServiceRequest.FromString(p.read_bytes())
        (cap / "json" / (p.stem + ".json")).write_text(MessageToJson(req))
        for rs in req.resource_spans:
            res = {a.key: anyval(a.value) for a in rs.resource.attributes}
            for ss in rs.scope_spans:
                for s in ss.spans:
                    attrs = {}
                    for a in s.attributes:
                        attrs[a.key] = anyval(a.value)
                        types[a.key].add(a.value.WhichOneof("value"))
                    st = {}
                    if s.status.code:
                        st["code"] = STATUS[s.status.code]
                    if s.status.message:
                        st["message"] = s.status.message
                    spans.append(
                        {
                            "file": p.stem,
                            "resource": res,
                            "scope": {"name": ss.scope.name, "version": ss.scope.version},
                            "name": s.name,
                            "kind": KIND[s.kind],
                            "trace_id": s.trace_id.hex(),
                            "span_id": s.span_id.hex(),
                            "parent_span_id": s.parent_span_id.hex(),
                            "start_unix_nano": s.start_time_unix_nano,
                            "duration_ms": round((s.end_time_unix_nano - s.start_time_unix_nano) / 1e6, 3),
                            "status": st,
                            "attributes": attrs,
                            "events": [
                                {"name": e.name, "attributes": {a.key: anyval(a.value) for a in e.attributes}}
                                for e in s.events
                            ],
                            "links": len(s.links),
                        }
                    )
    spans.sort(key=lambda s: s["start_unix_nano"])
    return spans, types


def leaves(obj, path=()):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from leaves(v, path + (str(k),))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from leaves(v, path + (str(i),))
    else:
        yield path, obj


HINTS = {
    "user_id": ("user",),
    "session_id": ("session", "conversation", "thread"),
    "plan": ("plan",),
    "feature": ("feature",),
    "request_model": ("model",),
    "response_model": ("model",),
    "input_tokens": ("input", "prompt", "usage.tokens"),
    "output_tokens": ("output", "completion"),
    "total_tokens": ("total", "usage.tokens"),
    "cached_tokens": ("cache_read", "cacheread", "cached"),
    "reasoning_tokens": ("reasoning",),
    "stream": ("stream",),
}
EXCLUDE = {
    "input_tokens": ("cache", "reasoning", "audio", "nocache", "total", "_details", "details."),
    "output_tokens": ("reasoning", "audio", "text", "total", "_details", "details."),
    "total_tokens": (),
    "cached_tokens": ("creation", "write"),
    "reasoning_tokens": (),
}


def matches(key: str, value, role: str, target) -> tuple[bool, bool]:
    """(matched, inside_json)"""
    if target is None:
        return False, False
    hint = HINTS[role]
    if isinstance(value, str) and value[:1] in "{[":
        try:
            obj = json.loads(value)
        except ValueError:
            obj = None
        if obj is not None:
            for path, leaf in leaves(obj):
                keytext = (key + "." + ".".join(path)).lower()
                if not any(h in keytext for h in hint) or any(x in keytext for x in EXCLUDE.get(role, ())):
                    continue
                if type(leaf) is type(target) and leaf == target:
                    return True, True
            return False, False
    if not any(h in key.lower() for h in hint) or any(x in key.lower() for x in EXCLUDE.get(role, ())):
        return False, False
    if isinstance(target, bool):
        return (value is target), False
    if isinstance(target, int):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False, False
        return value == target, False
    return value == target, False


def main():
    cap = Path(sys.argv[1])
    spec, title, notes_file, pkgs = sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5].split(",")
    leaf_only = spec.endswith("|leaf")
    spec = spec.removesuffix("|leaf")
    spans, types = load(cap)
    (cap / "spans.json").write_text(json.dumps(spans, indent=1, default=str))
    by_id = {(s["trace_id"], s["span_id"]): s for s in spans}
    if spec.startswith("re:"):
        rx = re.compile(spec[3:])
        is_llm = lambda s: bool(rx.fullmatch(s["name"]))  # noqa: E731
    else:
        names = set(spec.split(","))
        is_llm = lambda s: s["name"] in names  # noqa: E731
    if leaf_only:
        parents = {(s["trace_id"], s["parent_span_id"]) for s in spans}
        base_llm = is_llm
        is_llm = lambda s: base_llm(s) and (s["trace_id"], s["span_id"]) not in parents  # noqa: E731
    llm = [s for s in spans if is_llm(s)]
    # attribute_keys.json over all spans
    ak = {}
    for s in spans:
        for k, v in s["attributes"].items():
            e = ak.setdefault(k, {"count": 0, "types": sorted(types[k]), "span_names": [], "example": v})
            e["count"] += 1
            if s["name"] not in e["span_names"]:
                e["span_names"].append(s["name"])
            if isinstance(v, str) and len(v) > 200:
                e["example"] = (
                    v[:200] + "...(truncated)"
                    if not isinstance(e["example"], str) or len(e["example"]) > 200
                    else e["example"]
                )
    (cap / "attribute_keys.json").write_text(json.dumps(dict(sorted(ak.items())), indent=1, default=str))
    gt = [json.loads(x) for x in (cap / "ground_truth.jsonl").read_text().splitlines()]
    intended = [json.loads(x) for x in (cap / "intended.jsonl").read_text().splitlines()]
    gt_by_tag = defaultdict(list)
    for g in gt:
        gt_by_tag[g.get("call_tag")].append(g)

    def ancestors(s):
        out, cur = [], s
        while cur["parent_span_id"]:
            cur = by_id.get((cur["trace_id"], cur["parent_span_id"]))
            if cur is None:
                break
            out.append(cur)
        return out

    expected, problems = [], []
    role_keys = defaultdict(lambda: defaultdict(set))  # role -> key -> flags
    if len(llm) != len(intended):
        problems.append(f"{len(llm)} LLM spans for {len(intended)} calls")
    # LLM span of a call: the one whose attributes mention "[call N]"; spans mentioning no call are
    # given, in start order, to the calls left without one.
    assigned, untagged = {}, []
    for sp in llm:
        tags = set(re.findall(r"\[call (\d+)\]", json.dumps(sp["attributes"])))
        if len(tags) == 1 and int(next(iter(tags))) not in assigned:
            assigned[int(next(iter(tags)))] = sp
        else:
            untagged.append(sp)
    for it in intended:
        if it["n"] not in assigned and untagged:
            assigned[it["n"]] = untagged.pop(0)
    for n in sorted({it["n"] for it in intended} - set(assigned)):
        problems.append(f"call {n}: no LLM span")
    for i, it in enumerate(intended):
        n = it["n"]
        g = gt_by_tag.get(str(n), [])
        if len(g) != 1:
            problems.append(f"call {n}: {len(g)} server requests")
        g = g[-1] if g else {}
        srv = {
            k: g.get(k)
            for k in (
                "cached_tokens",
                "completion_tokens",
                "include_usage",
                "prompt_tokens",
                "reasoning_tokens",
                "response_id",
                "response_model",
                "stream",
                "total_tokens",
                "user",
            )
        }
        row = {
            "error": not it["result"]["ok"],
            "http_status": g.get("status"),
            "kind": it["kind"],
            "n": n,
            "properties": it["properties"],
            "request_model": it["model"],
            "server": srv,
            "session_id": it["session_id"],
            "usage_sent_to_client": bool(g.get("usage_reported")),
            "user_id": it["user_id"],
            "user_param_sent": it["user_param_sent"],
            "server_requests": len(gt_by_tag.get(str(n), [])),
        }
        s = assigned.get(n)
        if s is not None:
            blob = json.dumps(s["attributes"])
            tags = set(re.findall(r"\[call (\d+)\]", blob))
            if tags and tags != {str(n)}:
                problems.append(f"call {n}: LLM span #{i + 1} {s['name']} mentions calls {sorted(tags)}")
            anc = ancestors(s)
            row["llm_span"] = {
                "ancestors": [{"name": a["name"], "span_id": a["span_id"]} for a in anc],
                "kind": s["kind"],
                "name": s["name"],
                "parent_span_id": s["parent_span_id"],
                "span_id": s["span_id"],
                "status": s["status"].get("code", "STATUS_CODE_UNSET"),
                "trace_id": s["trace_id"],
            }
            targets = {
                "user_id": it["user_id"],
                "session_id": it["session_id"],
                "plan": it["properties"].get("plan"),
                "feature": it["properties"].get("feature"),
                "request_model": it["model"],
                "response_model": srv["response_model"],
                "input_tokens": srv["prompt_tokens"],
                "output_tokens": srv["completion_tokens"],
                "total_tokens": srv["total_tokens"],
                "cached_tokens": srv["cached_tokens"],
                "reasoning_tokens": srv["reasoning_tokens"],
                "stream": srv["stream"] if g else None,
            }
            if it["kind"] == "embed":
                targets["response_model"] = (
                    None if srv["response_model"] == it["model"] else srv["response_model"]
                )
            reported = defaultdict(dict)
            for who in [s] + anc:
                suffix = "" if who is s else f" @{who['name']}"
                for k, v in who["attributes"].items():
                    for role, t in targets.items():
                        if role == "response_model" and it["kind"] == "embed":
                            t = t or it["model"]
                        ok, injson = matches(k, v, role, t)
                        if ok:
                            reported[role][k + suffix] = v
                            role_keys[role][k].add(
                                ("in JSON" if injson else "")
                                + (f"on ancestor `{who['name']}`" if suffix else "")
                            )
            row["reported"] = dict(sorted(reported.items()))
        expected.append(dict(sorted(row.items())))
    (cap / "expected.jsonl").write_text("".join(json.dumps(e, sort_keys=True) + "\n" for e in expected))
    write_readme(cap, title, notes_file, pkgs, spans, llm, ak, role_keys, expected, problems, is_llm, by_id)
    print(f"{cap.name}: {len(spans)} spans, {len(llm)} LLM spans, problems: {problems}")


def write_readme(cap, title, notes_file, pkgs, spans, llm, ak, role_keys, expected, problems, is_llm, by_id):
    npm_ls = (cap / "npm-ls.txt").read_text() if (cap / "npm-ls.txt").exists() else ""
    versions = []
    for p in pkgs:
        m = re.search(r"[\s─]" + re.escape(p) + r"@(\S+)", npm_ls)
        versions.append(f"- `{p}@{m.group(1) if m else '?'}`")
    res = spans[0]["resource"] if spans else {}
    L = [
        f"# {title}",
        "",
        "Real OTLP/HTTP (protobuf) trace exports captured from an unmodified JavaScript instrumentation library, "
        "Node.js driving a local fake OpenAI-compatible server (`tools/fake_openai_server.py`). The 12 calls of "
        "`../README.md`.",
        "",
        "## Versions",
        "",
        *versions,
        "- Node.js " + (re.search(r"node (v\S+)", npm_ls) or [None, "v20.20.2"])[1],
        "- full tree: `npm-ls.txt`",
        "",
        "## How the capture was made",
        "",
        "The driver (`driver.js`, with `tools/common.js`) runs in its own Node process with a `NodeTracerProvider` "
        "(resource `service.name`, `deployment.environment.name=capture`) and a `BatchSpanProcessor(OTLPTraceExporter)` "
        "from `@opentelemetry/exporter-trace-otlp-proto` pointed at `tools/recorder.py`, which stores every Export "
        "request body byte for byte. After the 12 calls: `forceFlush()` + `shutdown()`.",
        "",
    ]
    L += [Path(notes_file).read_text().strip(), ""]
    L += [
        "## Files",
        "",
        "- `raw/traces-NNNN.pb` - each OTLP `ExportTraceServiceRequest` exactly as received",
        "- `json/traces-NNNN.json` - the same via `MessageToJson`",
        "- `spans.json` - flattened spans sorted by start time; `attribute_keys.json` - every key on any span",
        "- `ground_truth.jsonl` (fake server), `intended.jsonl` (driver), `expected.jsonl` (join + matched LLM span + reported values; "
        "`server_requests` = how many HTTP requests the call made)",
        "- `driver.js`, `driver.log`, `receiver.log`, `npm-ls.txt`",
        "",
        "Resource attributes: " + ", ".join(f"`{k}={v}`" for k, v in res.items()),
        "",
        f"Captured: {len(list((cap / 'raw').glob('*.pb')))} export request(s), {len(spans)} spans, {len(llm)} LLM spans for {len(expected)} calls.",
        "",
    ]
    if problems:
        L += ["Capture checks: " + "; ".join(problems), ""]
    cnt = Counter(
        (
            s["name"],
            s["kind"],
            s["scope"]["name"] + (" " + s["scope"]["version"] if s["scope"]["version"] else ""),
            is_llm(s),
        )
        for s in spans
    )
    L += [
        "| span name | kind | instrumentation scope | LLM span (the call) | count |",
        "|---|---|---|---|---|",
    ]
    for (nm, k, sc, isl), c in sorted(cnt.items(), key=lambda x: -x[1]):
        L.append(f"| `{nm}` | {k.replace('SPAN_KIND_', '')} | `{sc}` | {'yes' if isl else ''} | {c} |")
    L += [
        "",
        "## Where each fact lives (detected by matching values against ground truth)",
        "",
        "| fact | attribute key(s) |",
        "|---|---|",
    ]
    labels = [
        ("user_id", "end-user id"),
        ("session_id", "session id"),
        ("plan", "property `plan`"),
        ("feature", "property `feature`"),
        ("request_model", "request model"),
        ("response_model", "response model"),
        ("input_tokens", "input tokens"),
        ("output_tokens", "output tokens"),
        ("total_tokens", "total tokens"),
        ("cached_tokens", "cached input tokens"),
        ("reasoning_tokens", "reasoning tokens"),
        ("stream", "streaming flag"),
    ]
    for role, label in labels:
        ks = role_keys.get(role)
        txt = (
            ", ".join(
                f"`{k}`" + (f" ({'; '.join(sorted((f or 'on LLM span') for f in fl))})" if any(fl) else "")
                for k, fl in sorted(ks.items())
            )
            if ks
            else "**not recorded**"
        )
        L.append(f"| {label} | {txt} |")
    errs = [s for s in spans if s["status"].get("code") == "STATUS_CODE_ERROR"]
    L.append(
        f"| error | {len(errs)} spans with status ERROR: "
        + ", ".join(sorted({"`" + s["name"] + "`" for s in errs}))
        + "; error keys: "
        + (
            ", ".join(
                sorted(
                    {
                        "`" + k + "`"
                        for s in errs
                        for k in s["attributes"]
                        if "error" in k.lower() or "status" in k.lower()
                    }
                )
            )
            or "-"
        )
        + " |"
    )
    cost = sorted(k for k in ak if "cost" in k.lower())
    L.append("| cost | " + (", ".join(f"`{k}`" for k in cost) or "**not recorded**") + " |")
    L += [
        "",
        "## Attribute keys on the LLM spans and their ancestors",
        "",
        "| where | key | type | on N spans | example |",
        "|---|---|---|---|---|",
    ]
    seen = defaultdict(lambda: [0, None])
    for e in expected:
        if "llm_span" not in e:
            continue
        s = by_id[(e["llm_span"]["trace_id"], e["llm_span"]["span_id"])]
        chain = [(s, "LLM span")] + [
            (by_id[(s["trace_id"], a["span_id"])], f"ancestor `{a['name']}`")
            for a in e["llm_span"]["ancestors"]
        ]
        for who, where in chain:
            for k, v in who["attributes"].items():
                ent = seen[(where, k)]
                ent[0] += 1
                if ent[1] is None:
                    ent[1] = v
    for (where, k), (c, ex) in sorted(seen.items()):
        exs = json.dumps(ex, default=str)
        exs = exs if len(exs) < 70 else exs[:67] + "..."
        L.append(f"| {where} | `{k}` | {type(ex).__name__} | {c} | {exs.replace(chr(124), '/')} |")
    L += [
        "",
        "## Per call: ground truth vs. what the LLM span (and ancestors) reported",
        "",
        "| # | kind | model | user | GT in/out/cached/reasoning | reported in/out/cached/reasoning | LLM span | status |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for e in expected:
        sv, rp = e["server"], e.get("reported", {})
        gtt = (
            f"HTTP {e['http_status']}"
            if e["error"]
            else "/".join(
                str(sv[k]) if sv[k] is not None else "-"
                for k in ("prompt_tokens", "completion_tokens", "cached_tokens", "reasoning_tokens")
            )
        )
        rep = "/".join(
            ",".join(sorted({str(v) for v in rp[r].values()})) if r in rp else "-"
            for r in ("input_tokens", "output_tokens", "cached_tokens", "reasoning_tokens")
        )
        ls = e.get("llm_span", {})
        L.append(
            f"| {e['n']} | {e['kind']} | {e['request_model']} | {e['user_id'] or '-'} | {gtt} | {rep} | `{ls.get('name')}` | {ls.get('status', '').replace('STATUS_CODE_', '')} |"
        )
    (cap / "README.md").write_text("\n".join(L) + "\n")


if __name__ == "__main__":
    main()
