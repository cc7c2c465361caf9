"""A framework's span around a call that a client instrumentation records too. Pure: no I/O.

OpenInference's LangChain instrumentation makes an LLM span for each chat-model call (``ChatOpenAI``,
with the model and token counts); its OpenAI instrumentation, enabled beside it (as Phoenix's
``register(auto_instrument=True)`` does), makes one for the same request to the provider, as the
framework span's sibling (LangChain's callbacks do not make their span current) or child. Both look
like a call: the client's span is the call (what was sent to the provider, its model and counts),
the framework's span is skipped. A framework span with no such span in its request (LangChain
instrumented alone, or a provider without an instrumentation) is the call, or, exported apart from
its client span, waits to be paired in the store like a provider SDK's own span
(``dialects.sdk_span_waits``, ``store/counterparts.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import chain
from typing import Any, NamedTuple

# How many client spans (children first, then siblings, the untaken ones in request order) a
# framework span is compared with at most.
MAX_CANDIDATES = 64


class Paired(NamedTuple):
    spans: set[tuple[bytes, bytes]]  # the framework spans whose call a client span records
    cut: int  # framework spans that had more candidates than MAX_CANDIDATES and matched none


def framework_duplicates(spans: Sequence[Any], framework: set[tuple[bytes, bytes]]) -> Paired:
    """(trace id, span id) of the framework LLM spans (``framework``) whose call another LLM span
    of the request records: one of another scope that is its child, or its sibling that runs
    within its time. Each framework span takes at most one such span and each of those one
    framework span, so two calls under one parent stay two. ``spans`` are the request's LLM spans.
    """
    by_key = {(span.trace_id, span.span_id): span for span in spans}
    # The client spans not yet taken, by (trace, parent): a framework span's candidates are the
    # children of its span id and of its parent, and it looks at no more than MAX_CANDIDATES of
    # them, so hostile requests (thousands of spans under one parent) cost linear time.
    under: dict[tuple[bytes, bytes], dict[bytes, Any]] = {}
    for key, span in by_key.items():
        if key not in framework:
            under.setdefault((span.trace_id, span.parent_span_id), {})[span.span_id] = span
    out: set[tuple[bytes, bytes]] = set()
    cut = 0
    for key in sorted(framework & by_key.keys(), key=lambda k: by_key[k].start_time_unix_nano):
        outer = by_key[key]
        children = under.get((outer.trace_id, outer.span_id), {})
        siblings = under.get((outer.trace_id, outer.parent_span_id), {})
        candidates = chain(
            ((children, s) for s in children.values()), ((siblings, s) for s in siblings.values())
        )
        for looked, (group, inner) in enumerate(candidates):
            if looked == MAX_CANDIDATES:
                cut += 1
                break
            within = outer.start_time_unix_nano <= inner.start_time_unix_nano and (
                inner.end_time_unix_nano <= outer.end_time_unix_nano
            )
            if group is children or within:
                del group[inner.span_id]  # taken: it records one call only (the loop ends here)
                out.add(key)
                break
    return Paired(out, cut)
