"""The demo's traffic, planned: who calls which model when, with what tokens and errors.

Pure and seeded: ``plan_traffic`` turns (seed, users, requests, days, now) into traces of a few
dozen users -- chat conversations, retrieval-augmented searches, document summaries and tool-using
agents, on weekdays and in the working hours of each user's time zone, from heavy and light users
on three plans, a few of whom only started recently -- with one user's agent running away in the
last hour. ``ground_truth`` sums what the traces hold. ``demo_spans.py`` sends them through the
OpenTelemetry SDK.
"""

from __future__ import annotations

import math
import random
import uuid
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from user_metrics.cli.demo_world import (
    AGENT_MODELS,
    BASE62,
    CHAT_MODELS,
    DOMAINS,
    ERROR_RATE,
    ERRORS,
    FEATURES,
    FIRST_NAMES,
    HOURLY,
    LAST_NAMES,
    MODELS,
    NS,
    PLANS,
    SUMMARY_MODELS,
    TIMEZONES,
    TOOLS,
    WEEKEND,
    Call,
    Model,
    Profile,
    Tool,
    Trace,
    UserTruth,
)
from user_metrics.errors import InvalidInput

# ---- planning the traffic (pure: a seeded random generator in, traces out) ---------------------


def _choose(rng: random.Random, weighted: Sequence[tuple[Any, float]]) -> Any:
    return rng.choices([item for item, _ in weighted], [w for _, w in weighted])[0]


def _tokens(rng: random.Random, median: float, sigma: float, low: int, high: int) -> int:
    """A log-normal token count, clipped to [low, high]."""
    return max(low, min(high, round(rng.lognormvariate(math.log(median), sigma))))


def _seconds(value: float) -> int:
    return round(value * NS)


def _millis(rng: random.Random, low: float, high: float) -> int:
    return round(rng.uniform(low, high) * 1_000_000)


def _session_id(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _cached(rng: random.Random, model: Model, prefix: int) -> int | None:
    """Prompt-cache hits on a repeated prompt prefix: OpenAI caches 1024+ tokens in steps of 128."""
    if prefix < 1024 or model.provider not in ("openai", "anthropic") or rng.random() > 0.8:
        return None
    return prefix // 128 * 128 if model.provider == "openai" else prefix


def _call(
    rng: random.Random,
    model: Model,
    offset_ns: int,
    input_tokens: int,
    output_tokens: int | None,
    cache_read: int | None = None,
    finish_reason: str = "stop",
) -> Call:
    """One call: a few per cent fail without usage; latency follows the tokens generated."""
    operation = "chat" if output_tokens is not None else "embeddings"
    if rng.random() < ERROR_RATE:
        error, _, seconds = _choose(rng, [(e, e[1]) for e in ERRORS[model.provider]])
        jitter = rng.uniform(0.0, 0.5) if seconds >= 60 else rng.lognormvariate(0, 0.4)
        took = _seconds(seconds + jitter if seconds >= 60 else seconds * jitter)
        return Call(offset_ns, took, model, operation, None, None, finish_reason="error", error_type=error)
    seconds = model.first_token_seconds * rng.lognormvariate(0, 0.35) + input_tokens / 40_000
    if output_tokens is not None:
        seconds += output_tokens / (model.tokens_per_second * rng.lognormvariate(0, 0.15))
    took = _seconds(seconds)
    return Call(offset_ns, took, model, operation, input_tokens, output_tokens, cache_read, finish_reason)


def _end(call: Call) -> int:
    return call.offset_ns + call.duration_ns


def _chat_session(rng: random.Random, user: Profile, limit: int) -> list[Trace]:
    """A conversation: one trace per turn, the prompt growing with the history."""
    model = MODELS[_choose(rng, CHAT_MODELS[user.plan])]
    session = _session_id(rng)
    system = rng.randint(400, 1400)
    history = 0
    start = 0
    traces = []
    for turn in range(min(limit, 1 + int(rng.expovariate(1 / 2.5)), 12)):
        asked = _tokens(rng, 80, 0.9, 4, 3000)
        answer = _tokens(rng, 260, 0.7, 8, 4096)
        cached = _cached(rng, model, system + history) if turn else None
        call = _call(rng, model, 0, system + history + asked, answer, cached)
        traces.append(Trace("chat", user, session, start, call.duration_ns, (call,)))
        if call.error_type is None:
            history += asked + answer
        start += call.duration_ns + _seconds(rng.lognormvariate(math.log(35), 0.8))  # reading, typing
    return traces


def _search_session(rng: random.Random, user: Profile, limit: int) -> list[Trace]:
    """A few questions, each an embedding of the query and an answer over the retrieved chunks."""
    if limit < 2:
        return _chat_session(rng, user, limit)
    answerer = MODELS["gpt-4o-mini" if user.plan == "free" else "gpt-4o"]
    session = _session_id(rng)
    start = 0
    traces = []
    for _ in range(min(1 + int(rng.expovariate(1 / 0.8)), 4, limit // 2)):
        question = _tokens(rng, 18, 0.5, 3, 200)
        embedding = _call(rng, MODELS["text-embedding-3-small"], _millis(rng, 3, 15), question, None)
        calls = [embedding]
        if embedding.error_type is None:  # a failed embedding ends the request (HTTP 502)
            context = 600 + sum(rng.randint(250, 500) for _ in range(rng.randint(3, 8)))
            answer = _tokens(rng, 220, 0.6, 20, 1500)
            offset = _end(embedding) + _millis(rng, 20, 90)  # the vector search
            calls.append(_call(rng, answerer, offset, context + question, answer))
        duration = _end(calls[-1]) + _millis(rng, 2, 10)
        traces.append(Trace("search", user, session, start, duration, tuple(calls)))
        start += duration + _seconds(rng.lognormvariate(math.log(45), 0.8))
    return traces


def _summarize_session(rng: random.Random, user: Profile, limit: int) -> list[Trace]:
    """One or two documents summarised (sent as OpenLLMetry spans)."""
    model = MODELS[_choose(rng, SUMMARY_MODELS[user.plan])]
    session = _session_id(rng)
    start = 0
    traces = []
    for _ in range(min(limit, 2 if rng.random() < 0.25 else 1)):
        document = _tokens(rng, 5000, 0.9, 300, 120_000)
        call = _call(rng, model, _millis(rng, 2, 6), document + 350, _tokens(rng, 450, 0.5, 60, 2000))
        duration = _end(call) + _millis(rng, 1, 4)
        traces.append(Trace("summarize", user, session, start, duration, (call,)))
        start += duration + _seconds(rng.lognormvariate(math.log(90), 0.7))
    return traces


def _agent_run(
    rng: random.Random, user: Profile, limit: int, model: Model | None = None, steps: int | None = None
) -> Trace:
    """A tool-using agent: model calls that pick tools, tool calls, a final answer; failed calls retried."""
    model = model or MODELS[_choose(rng, AGENT_MODELS[user.plan])]
    steps = steps or min(2 + int(rng.expovariate(1 / 2)), 8)
    context = 1500 + 800 + _tokens(rng, 120, 0.8, 10, 2000)  # instructions, tool schemas, the task
    prefix = context
    at = _millis(rng, 3, 10)
    calls: list[Call] = []
    tools: list[Tool] = []
    step = 0
    while step < steps and len(calls) < limit and len(calls) < 3 * steps:
        final = step == steps - 1
        output = _tokens(rng, 320, 0.6, 30, 2500) if final else _tokens(rng, 70, 0.5, 15, 400)
        finish = "stop" if final else "tool_calls"
        call = _call(rng, model, at, context, output, _cached(rng, model, prefix), finish)
        calls.append(call)
        at = _end(call) + _millis(rng, 1, 5)
        if call.error_type is not None:
            at += _millis(rng, 200, 1500)  # back off, then retry the step
            continue
        context += output
        if not final:
            tool = Tool(rng.choice(TOOLS), at, _seconds(rng.lognormvariate(math.log(0.25), 0.9)))
            tools.append(tool)
            at = tool.offset_ns + tool.duration_ns + _millis(rng, 1, 5)
            context += _tokens(rng, 400, 0.9, 20, 8000)
        step += 1
    return Trace("agent", user, _session_id(rng), 0, at + _millis(rng, 2, 8), tuple(calls), tuple(tools))


def _agent_session(rng: random.Random, user: Profile, limit: int) -> list[Trace]:
    first = _agent_run(rng, user, limit)
    if rng.random() < 0.3 and limit > len(first.calls):  # a follow-up task in the same session
        second = _agent_run(rng, user, limit - len(first.calls))
        gap = first.duration_ns + _seconds(rng.lognormvariate(math.log(60), 0.7))
        return [first, replace(second, session_id=first.session_id, start_ns=gap)]
    return [first]


_SESSIONS: dict[str, Callable[[random.Random, Profile, int], list[Trace]]] = {
    "chat": _chat_session,
    "search": _search_session,
    "summarize": _summarize_session,
    "agent": _agent_session,
}


def _user_ids(rng: random.Random, count: int) -> list[str]:
    """Unique ids: auth-provider style ``user_...`` ids and e-mail addresses, mixed."""
    ids: list[str] = []
    while len(ids) < count:
        if rng.random() < 0.6:
            candidate = "user_" + "".join(rng.choice(BASE62) for _ in range(12))
        else:
            first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
            local = f"{first}.{last}" if rng.random() < 0.7 else f"{first[0]}{last}"
            candidate = f"{local}@{rng.choice(DOMAINS)}"
        if candidate not in ids:
            ids.append(candidate)
    return ids


def _profiles(rng: random.Random, count: int, days: int, now_ns: int) -> list[Profile]:
    """The users. The first is the one whose agent runs away in the last hour: pro, steady, long-time."""
    history_start = now_ns - days * 86_400 * NS
    recent = count // 8 if days >= 3 else 0
    profiles = []
    for n, user_id in enumerate(_user_ids(rng, count)):
        plan = "pro" if n == 0 else _choose(rng, [(p, share) for p, (share, _, _) in PLANS.items()])
        weight = 3.0 if n == 0 else rng.lognormvariate(0, 1.0) * PLANS[plan][1]
        start = history_start
        if 0 < n <= recent:  # a few users signed up in the last days
            start = now_ns - _seconds(rng.uniform(0.6, min(6.0, days / 2)) * 86_400)
        profiles.append(Profile(user_id, plan, _choose(rng, TIMEZONES), weight, start))
    return profiles


def _place(rng: random.Random, user: Profile, session: list[Trace], now_ns: int) -> list[Trace]:
    """Start the session at a time this user is likely to work (weekdays, local office hours)."""
    length = max(t.start_ns + t.duration_ns for t in session)
    low, high = user.start_ns, max(user.start_ns + 1, now_ns - length - 5 * NS)
    start = low
    for _ in range(1000):
        start = rng.randrange(low, high)
        local = datetime.fromtimestamp(start / NS + user.tz_hours * 3600, UTC)
        if rng.random() < HOURLY[local.hour] * (WEEKEND if local.weekday() >= 5 else 1.0):
            break
    return [replace(t, start_ns=start + t.start_ns) for t in session]


def _spike(rng: random.Random, user: Profile, count: int, now_ns: int) -> list[Trace]:
    """``count`` calls of agent runs that loop with long contexts, all in the last hour."""
    traces = []
    while count > 0:
        run = _agent_run(rng, user, count, MODELS["gpt-4o"], rng.randint(6, 10))
        count -= len(run.calls)
        latest = max(now_ns - 55 * 60 * NS + 1, now_ns - run.duration_ns - 2 * 60 * NS)
        traces.append(replace(run, start_ns=rng.randrange(now_ns - 55 * 60 * NS, latest)))
    return traces


def spike_size(requests: int) -> int:
    """How many of ``requests`` calls the runaway agent makes in the last hour."""
    return max(20, requests // 30)


def check_figures(users: int, requests: int, days: int) -> None:
    """InvalidInput unless the demo can be planned with these figures."""
    if not 2 <= users <= 100_000:
        raise InvalidInput(f"users must be from 2 to 100000, got {users}")
    if not 1 <= days <= 365:
        raise InvalidInput(f"days must be from 1 to 365, got {days}")
    least = spike_size(requests) + users
    if not least <= requests <= 10_000_000:
        raise InvalidInput(
            f"requests must be from {least} (one per user, {spike_size(requests)} for the spike) "
            f"to 10000000, got {requests}"
        )


def plan_traffic(seed: int, users: int, requests: int, days: int, now_ns: int) -> tuple[list[Trace], str]:
    """Every trace of the demo, by start time, and the id of the user who spikes at the end."""
    check_figures(users, requests, days)
    rng = random.Random(seed)
    profiles = _profiles(rng, users, days, now_ns)
    spiking = profiles[0]
    traces = _spike(rng, spiking, spike_size(requests), now_ns)
    budget = requests - spike_size(requests)
    history_ns = days * 86_400 * NS
    # Busier users have more sessions; recent sign-ups only since they joined.
    shares = [p.weight * (now_ns - p.start_ns) / history_ns for p in profiles]
    everyone = iter(profiles)  # everybody once, then by their share
    while budget > 0:
        user = next(everyone, None) or rng.choices(profiles, shares)[0]
        feature = _choose(rng, list(zip(FEATURES, PLANS[user.plan][2], strict=True)))
        session = _SESSIONS[feature](rng, user, budget)
        budget -= sum(len(t.calls) for t in session)
        traces.extend(_place(rng, user, session, now_ns))
    traces.sort(key=lambda t: t.start_ns)
    return traces, spiking.user_id


def ground_truth(traces: list[Trace]) -> tuple[tuple[UserTruth, ...], int]:
    """Per-user sums of what the traces hold, and the number of UTC days with a call."""
    sums: dict[str, list[int]] = {}
    plans: dict[str, str] = {}
    days = set()
    for trace in traces:
        plans[trace.user.user_id] = trace.user.plan
        row = sums.setdefault(trace.user.user_id, [0] * 6)
        row[5] += trace.span_count
        for call in trace.calls:
            row[0] += 1
            row[1] += call.error_type is not None
            row[2] += call.input_tokens or 0
            row[3] += call.output_tokens or 0
            row[4] += call.cache_read_tokens or 0
            days.add((trace.start_ns + call.offset_ns) // (86_400 * NS))
    users = tuple(UserTruth(user_id, plans[user_id], *sums[user_id]) for user_id in sorted(sums))
    return users, len(days)
