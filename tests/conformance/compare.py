"""Every stored request against ground truth, field by field.

A field is ``ok``, ``fail`` (the library sent the fact, the service stored it wrong: a gap of the
service) or ``lib`` (the library never sent it: a gap of the library, found by searching the
call's spans for the true value).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from genai_prices import Usage, calc_price
from spans import call_spans, pick_call_span, reported, span_leaves, window_spans

FIELDS = [
    "once",
    "user",
    "session",
    "props",
    "model",
    "provider",
    "input",
    "output",
    "cached",
    "cache_w",
    "reasoning",
    "status",
    "stream",
    "cost",
]
STREAMS = ("stream", "stream_nousage")
TOKENS = ("input", "output", "cached", "cache_w", "reasoning")


@dataclass
class Verdict:
    n: int
    field: str
    state: str  # ok, fail, lib
    want: Any
    got: Any


def truth_tokens(call: dict[str, Any], gt: dict[str, Any] | None) -> dict[str, int | None]:
    """What the client could know: tokens of a successful call whose usage reached the client."""
    none = dict.fromkeys(("input", "output", "cached", "cache_w", "reasoning"))
    if gt is None or gt["status"] != 200 or not gt["usage_reported"]:
        return none
    return {
        "input": gt["prompt_tokens"],
        "output": gt["completion_tokens"],
        "cached": gt["cached_tokens"],
        "cache_w": gt["cache_write_tokens"],
        "reasoning": gt["reasoning_tokens"],
    }


def truth_cost(tokens: dict[str, int | None], gt: dict[str, Any] | None, provider: str) -> Decimal | None:
    if gt is None or tokens["input"] is None:
        return None
    usage = Usage(
        input_tokens=tokens["input"],
        output_tokens=tokens["output"] or 0,
        cache_read_tokens=tokens["cached"] or 0,
        cache_write_tokens=tokens["cache_w"] or 0,
    )
    try:
        return calc_price(usage, gt["response_model"], provider_id=provider).total_price
    except LookupError:
        return None


def same(field: str, want: Any, got: Any) -> bool:
    if field in ("output", "cached", "cache_w", "reasoning") and want is None:
        return got in (None, 0)
    if field == "cost":
        if want is None:
            return got in (None, 0)
        return got is not None and abs(Decimal(str(got)) - Decimal(str(want))) <= Decimal("1e-9")
    return bool(want == got)


def judge(
    calls: list[dict[str, Any]],
    intended: list[dict[str, Any]],
    truth: list[dict[str, Any]],
    rows: list[dict[str, Any]],
    spans: list[dict[str, Any]],
    library: Any,
) -> tuple[list[Verdict], list[dict[str, Any]], list[dict[str, Any]]]:
    """Verdicts per call and field, the rows matched to no call, and per call the span chosen."""
    by_n = {i["n"]: i for i in intended}
    gt_by_n: dict[int, list[dict[str, Any]]] = {}
    for g in truth:
        gt_by_n.setdefault(g["call"], []).append(g)
    traces = {i["trace_id"]: i["n"] for i in intended if i.get("trace_id")}
    matched: dict[int, list[dict[str, Any]]] = {c["n"]: [] for c in calls}
    unmatched = []
    for row in rows:
        n = traces.get(row["trace_id"])
        if n is None:  # another trace: the call during which it started
            t = row["start_time"].timestamp()
            n = next((i["n"] for i in intended if i["t0"] - 0.005 <= t <= i["t1"] + 0.005), None)
        (matched[n] if n is not None else unmatched).append(row)
    verdicts: list[Verdict] = []
    picks = []
    for call in calls:
        n = call["n"]
        it = by_n.get(n, {"t0": 0, "t1": 0, "trace_id": ""})
        gts = gt_by_n.get(n, [])
        gt = gts[-1] if gts else None
        mine = call_spans(spans, it.get("trace_id", ""), it["t0"], it["t1"])
        span = pick_call_span(mine, gt["ts"] if gt else None, library.call_span)
        found = reported(span, [], gt or {}, call) if span else {}
        leaves = [leaf for s in mine + window_spans(spans, it["t0"], it["t1"]) for leaf in span_leaves(s)]
        picks.append({"n": n, "span": span, "reported": found, "gt": gt, "requests_to_provider": len(gts)})
        stored = matched[n]
        # With several rows, the fields are judged on the one stored for the call's span, if any.
        row = next(
            (r for r in stored if span and r["span_id"] == span["span_id"]), stored[0] if stored else None
        )
        tokens = truth_tokens(call, gt)
        reported_cost = next((v for p, v, _ in leaves if p in library.reported_cost_keys), None)
        cost = (
            Decimal(str(reported_cost))
            if reported_cost is not None
            else truth_cost(tokens, gt, call["provider"])
        )
        want = {
            "once": 1,
            "user": call["user"],
            "session": call["session"],
            "props": call["properties"],
            "model": call["model"],
            "provider": call["provider"],
            **tokens,
            "status": "error" if gt is None or gt["status"] != 200 else "ok",
            "stream": call["kind"] in STREAMS,
            "cost": cost,
        }
        for field in FIELDS:
            got = _got(field, row, stored, gt)
            if same(field, want[field], got):
                verdicts.append(Verdict(n, field, "ok", want[field], got))
            else:
                gap = _library_gap(field, want[field], got, leaves, call, mine, gt)
                state = "lib" if gap else "fail"
                if field == "cost" and any(
                    v.n == n and v.state == "lib" and v.field in TOKENS for v in verdicts
                ):
                    state = "lib"  # priced from the tokens the library sent: its gap, not the service's
                verdicts.append(Verdict(n, field, state, want[field], got))
    return verdicts, unmatched, picks


def _got(
    field: str, row: dict[str, Any] | None, stored: list[dict[str, Any]], gt: dict[str, Any] | None
) -> Any:
    if field == "once":
        return len(stored)
    if row is None:
        return None
    if field == "model":
        # The model a call is known by is the one asked for, else the one that answered (as the
        # query service has it: Langfuse names only the response's model after a response).
        response = row["response_model"]
        ok_response = response is None or (gt is not None and response == gt.get("response_model"))
        if row["request_model"] is None and ok_response:
            return response
        return row["request_model"] if ok_response else f"{row['request_model']} / {response}"
    column = {
        "user": "user_id",
        "session": "session_id",
        "props": "properties",
        "input": "input_tokens",
        "output": "output_tokens",
        "cached": "cache_read_tokens",
        "cache_w": "cache_write_tokens",
        "reasoning": "reasoning_tokens",
        "stream": "streaming",
        "cost": "cost_usd",
    }.get(field, field)
    value = row[column]
    if field == "props":
        return dict(value or {})
    return value


def _library_gap(
    field: str,
    want: Any,
    got: Any,
    leaves: list[tuple[str, Any, str]],
    call: dict[str, Any],
    mine: list[dict[str, Any]],
    gt: dict[str, Any] | None = None,
) -> bool:
    """True when the library's spans do not carry the true value (so no mapper could find it)."""
    values = [v for _, v, _ in leaves]
    if not mine:  # no span of the call at all: nothing stored is the library's gap, field by field
        return True
    if field == "model" and str(got).startswith(f"{want} / ") and gt and gt.get("response_model"):
        # The model asked for is stored; the model that answered (the server's) is in no span: the
        # response model stored is the library's own wrong value (LiteLLM's streams repeat the alias).
        return gt["response_model"] not in values
    if field in ("user", "session", "model"):
        if want is None:  # an id of the library's own where the application set none
            return got is not None and got in values
        return want not in values
    if field == "props":
        return any(
            not any(v == value and p.lower().endswith(key) for p, v, _ in leaves)
            for key, value in want.items()
        )
    if field in ("input", "output", "cached", "cache_w", "reasoning"):
        if want is None:
            return any(v == got for p, v, _ in leaves if isinstance(v, int) and "token" in p.lower())
        return not any(v == want for p, v, _ in leaves if isinstance(v, int) and not isinstance(v, bool))
    if field == "stream":
        return not any("stream" in p.lower() for p, _, _ in leaves)
    if field == "provider":
        return not any(isinstance(v, str) and call["provider"] in v.lower() for v in values)
    if field == "status":
        return want == "error" and not any(s["status"]["code"] == "STATUS_CODE_ERROR" for s in mine)
    return False
