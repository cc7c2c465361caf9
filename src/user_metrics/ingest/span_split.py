"""Which ingest path runs, and the split of a protobuf request body into candidate and plain spans.

Most spans an application's Collector forwards are not LLM calls and carry no identity (HTTP and
database spans). The native scanner (``_otlp_scan``, C, built by ``pip install`` where a compiler
exists) reads the request bytes once with the GIL released and splits the spans: *plain* spans, on
which the mapper could read nothing, are reduced to 40-byte id records (``plain_spans.py``); the
others, the *candidates*, are copied into a smaller request that the mapper maps as before. The
keys it looks for come from the compiled conventions (``scan_table``), the single source of truth.

Where the module was not built, or when the ``ingest_path`` setting is ``python``
(``USER_METRICS_INGEST_PATH=python``: a fallback to the reference path, and for comparing the two),
the service decodes and maps the whole request in Python: ``SpanSplit.splits`` is False then, and
``path``/``reason`` say which path runs and why. ``reference`` splits with ``split_reference`` (the
split in Python, slow: for tests of the split path where the native module is not built).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from user_metrics.errors import SettingsError
from user_metrics.ingest import conventions as c
from user_metrics.ingest.attributes import Conventions
from user_metrics.ingest.mapping import DECIDING_FIELDS


def scan_table(conv: Conventions, module: Any) -> Any:
    """The module's ``Table`` of what the mapper reads, from the compiled conventions.

    The keys are those of a field the mapper reads on every span (``mapping.DECIDING_FIELDS``:
    identity, call or not, LLM-looking), not those read on records only: ``server.address`` (on
    most HTTP and database spans) or ``error.type`` do not make a span a candidate.
    """
    deciding = [k for k, targets in conv.by_key.items() if any(t.field in DECIDING_FIELDS for t in targets)]
    keys = sorted({*deciding, *conv.bare_property_keys, *conv.property_json_keys})
    return module.Table(keys, list(conv.property_prefixes), list(c.LLM_LIKE_PREFIXES), list(c.LLM_LIKE_WORDS))


PATHS = ("auto", "python", "reference")  # the ingest_path setting's values


@dataclass(frozen=True)
class Split:
    """One request body split: candidates (a serialized request), plain span records, counts."""

    candidates: bytes
    plain: bytes
    spans: int
    plain_dropped_attributes: int


class SpanSplit:
    """The split of the service's ingest path, or None (``native``) where the Python path runs."""

    def __init__(self, conv: Conventions, module: Any, path: str, reason: str) -> None:
        self.path = path  # "native", "python" (or "reference", the split in Python)
        self.reason = reason  # why the python path runs ("" on the native one)
        self._module = module
        self._table = scan_table(conv, module) if module is not None else None
        self._limit = conv.max_span_attributes

    @property
    def splits(self) -> bool:
        return self._module is not None

    def split(self, body: bytes | bytearray | memoryview) -> Split:
        """The body split; ValueError when it is not an ExportTraceServiceRequest."""
        assert self._module is not None, "the python path does not split"
        return Split(*self._module.split(body, self._table, self._limit))


def load(conv: Conventions, ingest_path: str = "auto") -> SpanSplit:
    """The native split when the module is built and not forced off, else the Python path.

    ``ingest_path``: the setting, ``auto``, ``python`` or ``reference`` (else SettingsError)."""
    if ingest_path not in PATHS:
        raise SettingsError(f"ingest_path must be one of {', '.join(PATHS)}, got {ingest_path!r}")
    if ingest_path == "python":
        return SpanSplit(conv, None, "python", "ingest_path = python")
    if ingest_path == "reference":
        return SpanSplit(
            conv, importlib.import_module("user_metrics.ingest.split_reference"), "reference", ""
        )
    try:
        module = importlib.import_module("user_metrics.ingest._otlp_scan")
    except ImportError as exc:
        return SpanSplit(conv, None, "python", f"the native scanner is not built ({exc})")
    return SpanSplit(conv, module, "native", "")


def with_module(conv: Conventions, module: Any, path: str = "native") -> SpanSplit:
    """A split over a given module (``split_reference`` in tests and benchmarks)."""
    return SpanSplit(conv, module, path, "")
