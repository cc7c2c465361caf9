"""Two rules of a call's record that are about the span, not its attributes' names: input tokens
with cache added where a library counted them apart, and the span's times (pure)."""

from __future__ import annotations

from typing import Any

from user_metrics.ingest.attributes import MAX_TOKENS, MappingError


def input_with_cache(
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
    if total > MAX_TOKENS:
        raise MappingError(f"input tokens plus cache tokens are too many for one request: {total}")
    return total, True


def check_time(span: Any, future_limit: int) -> None:
    start, end = span.start_time_unix_nano, span.end_time_unix_nano
    if start == 0:
        raise MappingError("span has no start time")
    if end < start:
        raise MappingError(f"span ends before it starts (start {start}, end {end} ns)")
    if start > future_limit:
        raise MappingError(f"span starts more than a day in the future (start {start} ns)")
