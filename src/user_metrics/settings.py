"""Settings, declared once as data: flag > ``USER_METRICS_*`` environment > TOML file > default.

``load_settings`` is the only place that reads the environment or the config file; the frozen
``Settings`` it returns is passed down explicitly.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from user_metrics import settings_input
from user_metrics.errors import SettingsError as SettingsError
from user_metrics.settings_input import PlanPrice, convert, plan_prices, price_entries, read_config_file

ENV_PREFIX = "USER_METRICS_"
CONFIG_ENV = ENV_PREFIX + "CONFIG"


@dataclass(frozen=True)
class SettingSpec:
    """One setting: its name (TOML key), type, default, the help shown everywhere, and the TOML
    table it is written in ('' for the top level)."""

    name: str
    kind: type
    default: Any
    help: str
    section: str = ""

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


# The [conventions] table: attribute keys an operator adds to the built-in conventions table.
CONVENTIONS = "conventions"
_ORDER = (
    '; read after the built-in ones, except those listed before a "*", which marks where the '
    "built-in ones go (first match wins)"
)
# The [billing] table: the plan property and its prices.
BILLING = "billing"
# Settings of a table that may still be written at the top level of the file, where they used to be.
_TOP_LEVEL_TOO = ("property_keys",)

SPECS: tuple[SettingSpec, ...] = (
    SettingSpec("db", str, "./user_metrics.duckdb", "DuckDB database file (created if missing)"),
    SettingSpec(
        "grpc_listen", str, "127.0.0.1:4317", "OTLP/gRPC listen address HOST:PORT (port 0 picks a free port)"
    ),
    SettingSpec(
        "api_listen",
        str,
        "127.0.0.1:9464",
        "HTTP API listen address HOST:PORT (JSON API; port 0 picks a free port)",
    ),
    SettingSpec(
        "http_listen",
        str,
        "127.0.0.1:4318",
        "OTLP/HTTP listen address HOST:PORT (POST /v1/traces, protobuf or JSON; port 0 picks a free port)",
    ),
    SettingSpec(
        "ingest_tokens",
        list,
        (),
        "bearer tokens accepted for sending spans (OTLP gRPC and HTTP); empty: no token needed",
    ),
    SettingSpec(
        "read_tokens",
        list,
        (),
        "bearer tokens accepted for reading (query API, SQL, gRPC queries, /metrics); empty: no token needed",
    ),
    SettingSpec(
        "allow_unauthenticated",
        bool,
        False,
        "serve a non-loopback address without tokens (anyone who reaches it may send or read)",
    ),
    SettingSpec("tls_cert_file", str, "", "PEM certificate chain: serve gRPC and HTTP over TLS"),
    SettingSpec("tls_key_file", str, "", "PEM private key of tls_cert_file"),
    SettingSpec(
        "price_file", str, "", "TOML file of model prices that add to or override genai-prices' data"
    ),
    SettingSpec(
        "property_keys",
        list,
        (),
        "bare attribute keys recorded as custom properties, e.g. plan,feature (OpenLIT copies custom "
        "attributes un-prefixed)" + _ORDER,
        CONVENTIONS,
    ),
    SettingSpec(
        "user_id_keys",
        list,
        (),
        "attribute keys of your own that hold the user id, e.g. customer.id" + _ORDER,
        CONVENTIONS,
    ),
    SettingSpec(
        "session_id_keys",
        list,
        (),
        "attribute keys of your own that hold the session id" + _ORDER,
        CONVENTIONS,
    ),
    SettingSpec(
        "property_prefixes",
        list,
        (),
        "attribute key prefixes of your own whose keys are custom properties (the rest of the key, "
        "lower-cased, is the name), e.g. acme.meta.; each ends in . - _ : or /" + _ORDER,
        CONVENTIONS,
    ),
    SettingSpec(
        "plan_property",
        str,
        "",
        "the property that names the user's plan, e.g. plan; empty: no plan prices",
        BILLING,
    ),
    SettingSpec(
        "plan_prices",
        list,
        (),
        "the recurring price of each plan, VALUE=AMOUNT/month or VALUE=AMOUNT/year in USD, e.g. "
        "pro=20/month (a bare amount is per month); in the config file a table [billing.plan_prices]",
        BILLING,
    ),
    SettingSpec("max_message_mib", int, 64, "largest OTLP request accepted, in MiB (after decompression)"),
    SettingSpec("max_value_length", int, 4096, "longest text kept for ids, models and property values"),
    SettingSpec("max_properties", int, 64, "most custom properties kept per request (by name order)"),
    SettingSpec(
        "max_span_attributes",
        int,
        1024,
        "most attributes read of one span or resource (the first ones); the rest are ignored and counted",
    ),
    SettingSpec(
        "max_property_keys",
        int,
        1000,
        "most distinct property keys in the database; properties with further new keys are dropped",
    ),
    SettingSpec(
        "max_dimension_values",
        int,
        1000,
        "most distinct values of a service, environment, provider, model or property key with rollup "
        "cells of their own (first come, first served); later values are summed under (other)",
    ),
    SettingSpec(
        "write_queue_rows",
        int,
        100_000,
        "most rows waiting to be committed; beyond it exports are answered retry-later (gRPC "
        "UNAVAILABLE with RetryInfo, HTTP 503 with Retry-After)",
    ),
    SettingSpec(
        "attribution_window_seconds",
        float,
        30.0,
        "how long an LLM span without a user id waits, durably, for ancestors in later exports",
    ),
    SettingSpec(
        "grpc_workers",
        int,
        16,
        "gRPC worker threads (calls served at once); 4x as many calls may wait, more get RESOURCE_EXHAUSTED",
    ),
    SettingSpec(
        "http_workers", int, 16, "OTLP/HTTP requests processed at once; more are answered 503 Retry-After"
    ),
    SettingSpec(
        "http_max_connections",
        int,
        1024,
        "open connections per HTTP listener (OTLP/HTTP, API), a thread each; more are answered 503 "
        "Retry-After and closed",
    ),
    SettingSpec(
        "metrics_max_users",
        int,
        1000,
        "most users in the per-user /metrics families (the most recently active); 0 turns them off",
    ),
    SettingSpec(
        "metrics_refresh_seconds",
        float,
        5.0,
        "how often /metrics is rendered again in the background after new data; 0 renders on every scrape",
    ),
    SettingSpec(
        "metrics_properties",
        list,
        (),
        "property keys with /metrics families of requests and cost per value, e.g. plan",
    ),
    SettingSpec(
        "metrics_max_values",
        int,
        100,
        "most provider/model pairs in the per-model /metrics families, and values per key in the "
        "per-property ones (first come, first served); the rest are summed into one (other) series",
    ),
    SettingSpec(
        "memory_limit_mib",
        int,
        1024,
        "DuckDB's memory limit in MiB (cache, hash tables; it spills to disk beyond it); 0: DuckDB's "
        "default of 80 % of RAM",
    ),
    SettingSpec(
        "receive_timeout_seconds",
        float,
        30.0,
        "most time a client may take to send one request (HTTP headers and body, a gRPC message); "
        "slower ones are cut off",
    ),
    SettingSpec(
        "query_timeout_seconds",
        float,
        30.0,
        "time limit of one query of the HTTP API, the gRPC query service or the dashboard",
    ),
    SettingSpec("sql_timeout_seconds", float, 10.0, "time limit of one read-only SQL query"),
    SettingSpec("sql_max_rows", int, 10_000, "most rows one read-only SQL query may return"),
    SettingSpec(
        "sql_max_concurrent",
        int,
        4,
        "read-only SQL queries run at once (until DuckDB really stops them); more get 503 Retry-After",
    ),
    SettingSpec(
        "sql_max_result_mib",
        int,
        16,
        "most MiB of JSON rows one SQL answer holds; the rest is cut (truncated: true)",
    ),
    SettingSpec("timezone", str, "UTC", "IANA zone of calendar periods and buckets when a query has no tz"),
    SettingSpec("log_level", str, "info", "debug, info, warning or error"),
    SettingSpec("ingest_path", str, "auto", "auto (native split where built), python or reference (tests)"),
)


@dataclass(frozen=True)
class _Range:
    """The values a numeric setting may take: from ``low`` (excluded if ``above``) to ``high``."""

    low: float
    high: float | None = None
    above: bool = False

    def holds(self, value: float) -> bool:
        if value < self.low or (self.above and value == self.low):
            return False
        return self.high is None or value <= self.high

    def __str__(self) -> str:
        if self.above:
            return f"above {self.low:g} and at most {self.high:g}" if self.high else f"above {self.low:g}"
        if self.high is None:
            return f"at least {self.low:g}" if self.low else "0 or more"
        return f"from {self.low:g} to {self.high:g}"


# Numeric settings and the values they may take.
_RANGES: dict[str, _Range] = {
    "receive_timeout_seconds": _Range(0, 3600, above=True),
    "query_timeout_seconds": _Range(0, 3600, above=True),
    "sql_timeout_seconds": _Range(0, 3600, above=True),
    "attribution_window_seconds": _Range(0, 3600),
    "metrics_refresh_seconds": _Range(0, 3600),
    "metrics_max_users": _Range(0),
    "sql_max_rows": _Range(1, 100_000),
    "sql_max_concurrent": _Range(1, 64),
    "sql_max_result_mib": _Range(1, 1024),
    **dict.fromkeys(
        (
            "max_message_mib",
            "max_value_length",
            "max_properties",
            "max_span_attributes",
            "max_property_keys",
            "max_dimension_values",
            "write_queue_rows",
            "grpc_workers",
            "http_workers",
            "http_max_connections",
            "metrics_max_values",
        ),
        _Range(1),
    ),
}


@dataclass(frozen=True)
class Settings:
    """The validated settings of one service instance."""

    db: str = "./user_metrics.duckdb"
    grpc_listen: str = "127.0.0.1:4317"
    api_listen: str = "127.0.0.1:9464"
    http_listen: str = "127.0.0.1:4318"
    ingest_tokens: tuple[str, ...] = ()
    read_tokens: tuple[str, ...] = ()
    allow_unauthenticated: bool = False
    tls_cert_file: str = ""
    tls_key_file: str = ""
    price_file: str = ""
    property_keys: tuple[str, ...] = ()
    user_id_keys: tuple[str, ...] = ()
    session_id_keys: tuple[str, ...] = ()
    property_prefixes: tuple[str, ...] = ()
    plan_property: str = ""
    plan_prices: tuple[str, ...] = ()
    max_message_mib: int = 64
    max_value_length: int = 4096
    max_properties: int = 64
    max_span_attributes: int = 1024
    max_property_keys: int = 1000
    max_dimension_values: int = 1000
    write_queue_rows: int = 100_000
    attribution_window_seconds: float = 30.0
    grpc_workers: int = 16
    http_workers: int = 16
    http_max_connections: int = 1024
    metrics_max_users: int = 1000
    metrics_refresh_seconds: float = 5.0
    metrics_properties: tuple[str, ...] = ()
    metrics_max_values: int = 100
    memory_limit_mib: int = 1024
    receive_timeout_seconds: float = 30.0
    query_timeout_seconds: float = 30.0
    sql_timeout_seconds: float = 10.0
    sql_max_rows: int = 10_000
    sql_max_concurrent: int = 4
    sql_max_result_mib: int = 16
    timezone: str = "UTC"
    log_level: str = "info"
    ingest_path: str = "auto"

    def __post_init__(self) -> None:
        split_address(self.grpc_listen, "grpc_listen")
        split_address(self.api_listen, "api_listen")
        split_address(self.http_listen, "http_listen")
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise SettingsError("tls_cert_file and tls_key_file go together: set both or neither")
        for name in ("ingest_tokens", "read_tokens"):
            for token in getattr(self, name):
                if len(token) < 16 or not token.isascii() or not token.isprintable() or " " in token:
                    raise SettingsError(
                        f"{name}: each token must be at least 16 printable ASCII characters without spaces"
                    )
        for name, allowed in _RANGES.items():
            value = getattr(self, name)
            if not allowed.holds(value):
                raise SettingsError(f"{name} must be {allowed}, got {value}")
        if self.memory_limit_mib != 0 and self.memory_limit_mib < 128:
            raise SettingsError(
                f"memory_limit_mib must be 0 (DuckDB's default) or at least 128, got {self.memory_limit_mib}"
            )
        if self.max_message_mib > 2047:
            raise SettingsError("max_message_mib must be below 2048 (gRPC's limit is 2 GiB)")
        if self.log_level.lower() not in ("debug", "info", "warning", "error"):
            raise SettingsError(f"log_level must be debug, info, warning or error, got {self.log_level!r}")
        if not self.db:
            raise SettingsError("db must name a file")
        settings_input.check_zone(self.timezone, "timezone")
        if bool(self.plan_property.strip()) != bool(self.plan_prices):
            raise SettingsError("plan_property and plan_prices go together: set both or neither")
        self.prices()  # each price checked: a SettingsError naming it

    def prices(self) -> tuple[PlanPrice, ...]:
        """The plan prices, parsed (``plan_prices`` holds their text)."""
        return plan_prices(self.plan_prices)


assert [s.name for s in SPECS] == [f.name for f in fields(Settings)], "SPECS and Settings disagree"


def split_address(address: str, name: str) -> tuple[str, int]:
    """'HOST:PORT' (or '[v6]:PORT') -> (host, port)."""
    host, sep, port_text = address.rpartition(":")
    if not sep or not host or not port_text.isdigit() or int(port_text) > 65535:
        raise SettingsError(f"{name} must be HOST:PORT, got {address!r}")
    return host.strip("[]"), int(port_text)


def load_settings(
    flags: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    config_file: str | None = None,
) -> Settings:
    """Resolve every setting: flags > environment > config file > defaults."""
    flags = {k: v for k, v in (flags or {}).items() if v is not None}
    environ = os.environ if environ is None else environ
    config_file = config_file or environ.get(CONFIG_ENV) or None
    tables = {spec.name: spec.section for spec in SPECS}
    file_values = read_config_file(config_file, tables, _TOP_LEVEL_TOO) if config_file else {}
    values: dict[str, Any] = {}
    for spec in SPECS:
        if spec.name in flags:
            values[spec.name] = convert(spec.name, spec.kind, flags[spec.name], spec.flag)
        elif spec.env in environ:
            values[spec.name] = convert(spec.name, spec.kind, environ[spec.env], spec.env)
        elif spec.name in file_values:
            value, table = file_values[spec.name]
            origin = f"in [{table}] of {config_file}" if table else f"in {config_file}"
            value = price_entries(spec.name, value, origin) if spec.name == "plan_prices" else value
            values[spec.name] = convert(spec.name, spec.kind, value, origin, split_text=not table)
    return Settings(**values)
