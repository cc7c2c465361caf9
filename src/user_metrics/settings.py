"""Settings, declared once as data (``settings_specs.py``): flag > ``USER_METRICS_*`` environment >
TOML file > default.

``load_settings`` is the only place that reads the environment or the config file; the frozen
``Settings`` it returns, validated as a whole (settings that go together, ranges), is passed
down explicitly.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from user_metrics import settings_input
from user_metrics.errors import SettingsError as SettingsError
from user_metrics.settings_input import PlanPrice, convert, plan_prices, price_entries, read_config_file
from user_metrics.settings_specs import BILLING as BILLING
from user_metrics.settings_specs import CONFIG_ENV as CONFIG_ENV
from user_metrics.settings_specs import CONVENTIONS as CONVENTIONS
from user_metrics.settings_specs import ENV_PREFIX as ENV_PREFIX
from user_metrics.settings_specs import LAKE as LAKE
from user_metrics.settings_specs import SPECS as SPECS
from user_metrics.settings_specs import TOP_LEVEL_TOO
from user_metrics.settings_specs import SettingSpec as SettingSpec

# lake_store_metrics: whether a node in lake mode renders the store's /metrics families.
STORE_METRICS = ("on", "off", "auto")


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
    "lake_ship_interval": _Range(0, 3600, above=True),
    "lake_max_lag": _Range(0, 86400, above=True),
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
    ingest: bool = True
    lake: str = field(default="", repr=False)  # a connection string may hold a password
    lake_data: str = ""
    lake_ship_interval: float = 1.0
    lake_max_lag: float = 60.0
    lake_store_metrics: str = "auto"
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
        self._check_lake()

    def _check_lake(self) -> None:
        """The lake settings go together (the catalog string is never shown: it may hold a password)."""
        if not self.lake.strip():
            for name, given in (
                ("lake_data", self.lake_data != ""),
                ("lake_store_metrics", self.lake_store_metrics != "auto"),
            ):
                if given:
                    raise SettingsError(f"{name} is a setting of lake mode: set lake (the catalog) too")
            if not self.ingest:
                raise SettingsError(
                    "ingest off makes a reader-only node, which reads a lake: set lake (--lake CATALOG, "
                    "USER_METRICS_LAKE or lake in [lake]) too"
                )
        if self.lake_store_metrics not in STORE_METRICS:
            shown = self.lake_store_metrics
            raise SettingsError(f"lake_store_metrics must be on, off or auto, got {shown!r}")
        if self.lake_max_lag <= self.lake_ship_interval:
            raise SettingsError(
                f"lake_max_lag ({self.lake_max_lag:g} s) must be longer than lake_ship_interval "
                f"({self.lake_ship_interval:g} s): a node refuses exports when its oldest row not yet "
                "shipped is older than lake_max_lag"
            )

    @property
    def store_metrics(self) -> bool:
        """Whether /metrics renders the store's families: always with the single file; in lake
        mode as lake_store_metrics says (auto: only on a reader-only node)."""
        if not self.lake.strip() or self.lake_store_metrics == "on":
            return True
        return self.lake_store_metrics == "auto" and not self.ingest

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
    file_values = read_config_file(config_file, tables, TOP_LEVEL_TOO) if config_file else {}
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
