"""The operator's own attribute keys (the ``[conventions]`` settings), checked against the built-in
conventions table and merged into it, once at start-up.

Each setting lists keys (or prefixes) in the order they are read. ``"*"`` stands for the
built-in ones: keys before it are read ahead of them, keys after it (or all of them, without a
``"*"``) after them. So by default a key of one's own never changes what a span the built-in
conventions already read is stored as; it only reads spans they do not. A list that cannot be
used is refused with a ``SettingsError`` naming the setting, the entry and why.
"""

from __future__ import annotations

from collections.abc import Iterable

from user_metrics.errors import SettingsError
from user_metrics.ingest import conventions as c

BUILT_IN = "*"  # where, in an operator's list, the built-in keys are read
# A property prefix ends in one of these, so that it cannot end in the middle of a word
# (``acme`` would also take ``acmecorp.x``).
PREFIX_ENDINGS = (".", "-", "_", ":", "/")


def split_at_built_in(setting: str, entries: Iterable[object]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(entries read before the built-in ones, entries read after them), each one checked."""
    if isinstance(entries, str):  # would be read as one key per character
        raise SettingsError(f"{setting}: must be a list of keys, got the string {entries!r}")
    listed: list[str] = []
    mark: int | None = None
    for entry in entries:
        if not isinstance(entry, str):
            raise SettingsError(f"{setting}: {entry!r} is not a string")
        if entry == BUILT_IN:
            if mark is not None:
                raise SettingsError(f'{setting}: "{BUILT_IN}" (where the built-in keys go) is listed twice')
            mark = len(listed)
            continue
        if not entry.strip():
            raise SettingsError(f"{setting}: {entry!r} is empty; an attribute key must have a name")
        if entry != entry.strip():
            raise SettingsError(f"{setting}: {entry!r} has spaces around it; no attribute key would match")
        if BUILT_IN in entry:
            raise SettingsError(
                f"{setting}: {entry!r} is not an attribute key: patterns are not supported, and "
                f'"{BUILT_IN}" alone marks where the built-in keys go'
            )
        if entry in listed:
            raise SettingsError(f"{setting}: {entry!r} is listed twice")
        listed.append(entry)
    if mark is None:
        return (), tuple(listed)
    return tuple(listed[:mark]), tuple(listed[mark:])


def _built_in_meanings() -> dict[str, str]:
    """Every key the built-in table reads -> what it is read as, for refusing clashes."""
    meanings: dict[str, str] = {}
    for field_name, sources in c.FIELDS.items():
        for source in sources:
            meanings.setdefault(source.key, "the " + field_name.replace("_", " "))
    meanings[c.SERVICE_NAME_KEY] = "the service name"
    meanings.update(dict.fromkeys(c.ENVIRONMENT_KEYS, "the environment"))
    meanings.update(dict.fromkeys(c.PROPERTY_JSON_KEYS, "a JSON object of properties"))
    return {key: f"{meaning} by the built-in conventions" for key, meaning in meanings.items()}


def merged_fields(
    user_id_keys: Iterable[object], session_id_keys: Iterable[object]
) -> tuple[dict[str, tuple[c.Source, ...]], dict[str, str]]:
    """The built-in FIELDS with the operator's user and session id keys before and after theirs,
    and what every key (built-in or the operator's) is read as."""
    meanings = _built_in_meanings()
    fields = dict(c.FIELDS)
    for setting, field_name, entries in (
        ("user_id_keys", "user_id", user_id_keys),
        ("session_id_keys", "session_id", session_id_keys),
    ):
        before, after = split_at_built_in(setting, entries)
        # A built-in key of the same field may be listed: it moves to where the operator put it
        # (so a key that a later release reads by default never stops a service from starting).
        same = f"the {field_name.replace('_', ' ')} by the built-in conventions"
        for key in before + after:
            if key in meanings and meanings[key] != same:
                raise SettingsError(f"{setting}: {key!r} is already read as {meanings[key]}")
            meanings[key] = f"the {field_name.replace('_', ' ')} ({setting})"
        listed = set(before + after)
        built_in = tuple(s for s in c.FIELDS[field_name] if s.json_key is not None or s.key not in listed)
        fields[field_name] = _sources(before) + built_in + _sources(after)
    return fields, meanings


def _sources(keys: tuple[str, ...]) -> tuple[c.Source, ...]:
    return tuple(c.Source(k) for k in keys)


def merged_prefixes(entries: Iterable[object]) -> tuple[str, ...]:
    """The property prefixes in the order they are tried: the operator's before, built-in, after.

    No prefix may start with another: a key under both would only ever be read under one of them
    (and the operator's must not take keys from the built-in ones).
    """
    before, after = split_at_built_in("property_prefixes", entries)
    for prefix in before + after:
        if not prefix.endswith(PREFIX_ENDINGS):
            raise SettingsError(
                f"property_prefixes: {prefix!r} must end in one of {' '.join(PREFIX_ENDINGS)}, so that it "
                "cannot end in the middle of a word"
            )
    merged = before + c.PROPERTY_PREFIXES + after
    for prefix in before + after:
        if prefix in c.PROPERTY_PREFIXES:
            raise SettingsError(f"property_prefixes: {prefix!r} is already a built-in property prefix")
        for other in merged:
            if other != prefix and (other.startswith(prefix) or prefix.startswith(other)):
                whose = "the built-in prefix" if other in c.PROPERTY_PREFIXES else "the prefix"
                raise SettingsError(
                    f"property_prefixes: {prefix!r} overlaps {whose} {other!r}: a key under both would "
                    "be read under only one of them"
                )
    return merged


def bare_keys(
    entries: Iterable[object], meanings: dict[str, str], prefixes: tuple[str, ...]
) -> dict[str, tuple[str, int]]:
    """Bare property keys -> (property name, rank): below 0 ahead of the built-in property sources
    (the prefixes, then the JSON ``metadata``), above ``len(prefixes)`` after them."""
    before, after = split_at_built_in("property_keys", entries)
    for key in before + after:
        if key in meanings:
            raise SettingsError(
                f"property_keys: {key!r} already has a meaning: it is read as {meanings[key]}"
            )
        under = [p for p in prefixes if key.startswith(p)]
        if under:
            raise SettingsError(
                f"property_keys: {key!r} already has a meaning: it is read under the property prefix "
                f"{under[0]!r}"
            )
    out = {key: (key.lower(), rank - len(before)) for rank, key in enumerate(before)}
    out |= {key: (key.lower(), len(prefixes) + 1 + rank) for rank, key in enumerate(after)}
    return out
