"""Every setting, declared once as data: its name (the TOML key), type, default, help text and the
TOML table it is written in. The command line's flags, the environment's ``USER_METRICS_*``
variables, the config file and README's configuration table are all read from ``SPECS``;
``settings.py`` resolves and validates the values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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
        """``--name``; for a switch that is on by default, ``--no-name`` (which turns it off)."""
        off = "no-" if self.kind is bool and self.default is True else ""
        return "--" + off + self.name.replace("_", "-")


# The [conventions] table: attribute keys an operator adds to the built-in conventions table.
CONVENTIONS = "conventions"
_ORDER = (
    '; read after the built-in ones, except those listed before a "*", which marks where the '
    "built-in ones go (first match wins)"
)
# The [billing] table: the plan property and its prices.
BILLING = "billing"
# The [lake] table: the DuckLake catalog and data path of lake mode, and how a node ships to it.
LAKE = "lake"
# Settings of a table that may still be written at the top level of the file, where they used to be.
TOP_LEVEL_TOO = ("property_keys",)

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
    SettingSpec(
        "ingest",
        bool,
        True,
        "receive OTLP spans (gRPC and HTTP) and store them; off: a reader-only node, which needs a lake "
        "and serves the HTTP API, dashboard, SQL, /metrics and gRPC queries over it, with no local file",
    ),
    SettingSpec(
        "lake",
        str,
        "",
        "lake mode: the DuckLake catalog, a PostgreSQL connection string (libpq keywords, e.g. "
        "'host=db port=5432 dbname=lake user=um'); empty: the single DuckDB file only",
        LAKE,
    ),
    SettingSpec(
        "lake_data",
        str,
        "",
        "the lake's data path (a directory, or any path DuckDB can write) for its Parquet files; needed "
        "when the lake is created, read from the catalog after",
        LAKE,
    ),
    SettingSpec(
        "lake_ship_interval",
        float,
        1.0,
        "seconds between two moves of a receiver's outbox into the lake (a span is visible to readers "
        "of the lake about this long plus one lake commit after its export is acknowledged)",
        LAKE,
    ),
    SettingSpec(
        "lake_max_lag",
        float,
        60.0,
        "seconds the oldest row not yet shipped to the lake may wait (the lake unreachable); beyond it "
        "exports are answered retry-later until the node has caught up",
        LAKE,
    ),
    SettingSpec(
        "lake_store_metrics",
        str,
        "auto",
        "on, off or auto: whether /metrics renders the store's families (llm_*, per user and "
        "application-wide) from the lake; auto: on for a reader-only node, off for a receiver, so "
        "that sum() over instances counts each user once",
        LAKE,
    ),
    SettingSpec("timezone", str, "UTC", "IANA zone of calendar periods and buckets when a query has no tz"),
    SettingSpec("log_level", str, "info", "debug, info, warning or error"),
    SettingSpec("ingest_path", str, "auto", "auto (native split where built), python or reference (tests)"),
)
