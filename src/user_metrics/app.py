"""The app factory: builds the store, the pipeline and the servers from Settings."""

from __future__ import annotations

import gc
import logging
import ssl
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

import duckdb
import grpc

from user_metrics import __version__
from user_metrics.coverage_counts import CoverageCounts
from user_metrics.ingest import span_split
from user_metrics.ingest.attributes import compile_conventions
from user_metrics.ingest.ingestor import Ingestor
from user_metrics.ingest.otlp_grpc import trace_service_handler
from user_metrics.ingest.otlp_http import OtlpHttpServer
from user_metrics.ingest.pricing import Pricer, load_price_file
from user_metrics.ingest.revenue_import import import_revenue
from user_metrics.net.auth import BearerInterceptor, Tokens, check_exposure
from user_metrics.net.grpc_server import GrpcServer, Rpcs
from user_metrics.net.http_server import BackgroundServer, tls_context
from user_metrics.serve.activity import INTERVAL_SECONDS, ActivityLog, count_users
from user_metrics.serve.grpc_api import user_metrics_service_handler
from user_metrics.serve.http_api import ApiServer
from user_metrics.serve.metrics import RenderedMetrics, UsageCollector
from user_metrics.settings import SPECS, Settings, SettingsError, split_address
from user_metrics.stats import Stats
from user_metrics.store.revenue import write_plan_prices
from user_metrics.store.writer import Store

log = logging.getLogger("user_metrics")

# gRPC calls that may wait (for their message or a worker thread), per worker; beyond them gRPC
# answers RESOURCE_EXHAUSTED.
GRPC_WAITING_PER_WORKER = 4
# Allocations between two gen-0 collections of the cyclic GC, once started (CPython's default: 700).
GC_THRESHOLD = 50_000


def _settle_gc() -> None:
    """Once started, the long-lived objects (price tables, conventions, modules) are frozen: the
    cyclic GC never walks them again. And a gen-0 collection comes every GC_THRESHOLD allocations,
    not 700: mapping one request allocates tens of thousands of short-lived objects, most freed
    by reference counting anyway (tests/benchmarks/gc_settings.py: mapping 1.3-1.5x faster)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, *gc.get_threshold()[1:])


S = TypeVar("S", bound=BackgroundServer)


class App:
    """One running service: ``start()``, then ``stop()`` flushes everything acknowledged."""

    def __init__(self, settings: Settings, activity_interval: float = INTERVAL_SECONDS) -> None:
        """``activity_interval``: seconds between the info lines logged while spans arrive."""
        check_exposure(settings)
        self.settings = settings
        self.ingest_tokens = Tokens(settings.ingest_tokens, "ingest")
        self.read_tokens = Tokens(settings.read_tokens, "read")
        self.tls = _load_tls(settings)
        self.stats = Stats()
        custom = load_price_file(settings.price_file) if settings.price_file else []
        self.pricer = Pricer(custom)
        self.conventions = compile_conventions(  # the [conventions] settings checked: a SettingsError
            settings.property_keys,
            settings.max_value_length,
            settings.max_properties,
            settings.max_span_attributes,
            user_id_keys=settings.user_id_keys,
            session_id_keys=settings.session_id_keys,
            property_prefixes=settings.property_prefixes,
        )
        self.split = span_split.load(self.conventions, settings.ingest_path)  # before the store opens
        # A database this start creates is removed again if the service cannot start listening.
        self._new_files = [p for p in _database_files(settings.db) if not p.exists()]
        self.store = Store(
            settings.db,
            self.stats,
            memory_limit_mib=settings.memory_limit_mib,
            max_queue_rows=settings.write_queue_rows,
            attribution_window_seconds=settings.attribution_window_seconds,
            max_dimension_values=settings.max_dimension_values,
        )
        # The plan prices of the settings replace those of the last start, before anyone reads.
        prices = [(p.value, p.amount, p.per) for p in settings.prices()]
        self.store.run(lambda con: write_plan_prices(con, settings.plan_property.strip(), prices)).result()
        # The coverage report's live part: as many (service, scope) entries as /metrics has values.
        self.coverage = CoverageCounts(self.stats, settings.metrics_max_values)
        self.ingestor = Ingestor(
            self.conventions,
            self.pricer,
            self.store,
            self.stats,
            max_property_keys=settings.max_property_keys,
            attribution_window_seconds=settings.attribution_window_seconds,
            coverage=self.coverage,
            split=self.split,
        )
        self.max_message_bytes = settings.max_message_mib * 1024 * 1024
        rpcs = Rpcs(settings.grpc_workers, settings.receive_timeout_seconds, self.stats)
        self.grpc_server = GrpcServer(
            rpcs,
            handlers=[
                trace_service_handler(self.ingestor, rpcs),
                user_metrics_service_handler(
                    self.store.reader,
                    rpcs,
                    query_timeout=settings.query_timeout_seconds,
                    stats=self.stats,
                    coverage=self.coverage,
                    timezone=settings.timezone,
                ),
            ],
            interceptors=[BearerInterceptor(self.ingest_tokens, self.read_tokens)],
            options=[
                ("grpc.max_receive_message_length", self.max_message_bytes),
                # Without this gRPC sets SO_REUSEPORT and a second server silently shares the port.
                ("grpc.so_reuseport", 0),
                ("grpc.max_send_message_length", 16 * 1024 * 1024),
            ],
            maximum_concurrent_rpcs=settings.grpc_workers * (1 + GRPC_WAITING_PER_WORKER),
        )
        self.grpc_address = ""
        collector = UsageCollector(
            self.store.reader,
            self.stats,
            lambda: self.store.queue,
            max_users=settings.metrics_max_users,
            property_keys=settings.metrics_properties,
            max_values=settings.metrics_max_values,
            coverage=self.coverage,
        )
        self.metrics = RenderedMetrics(
            collector,
            lambda: (self.stats.exports, self.stats.commits, self.stats.compactions),
            settings.metrics_refresh_seconds,
        )
        self.activity = ActivityLog(self.stats, lambda: count_users(self.store.reader), activity_interval)
        self.otlp_http: OtlpHttpServer | None = None
        self.otlp_http_url = ""
        self.api: ApiServer | None = None
        self.api_url = ""

    def start(self) -> None:
        """Bind and start serving; logs where it listens and which database it writes."""
        settings = self.settings
        host, _port = split_address(settings.grpc_listen, "grpc_listen")
        try:
            credentials = _grpc_credentials(settings) if self.tls is not None else None
            port = self.grpc_server.bind(settings.grpc_listen, credentials)
        except RuntimeError as exc:
            self.grpc_server.stop(0)
            self._close_unstarted()
            raise _cannot_listen("grpc_listen", settings.grpc_listen, exc) from exc
        self.grpc_address = _join(host, port)
        try:
            self.otlp_http = self._bind(
                "http_listen",
                lambda address: OtlpHttpServer(
                    address,
                    self.ingestor,
                    self.stats,
                    max_body_bytes=self.max_message_bytes,
                    workers=settings.http_workers,
                    receive_timeout=settings.receive_timeout_seconds,
                    max_connections=settings.http_max_connections,
                    ingest_tokens=self.ingest_tokens,
                    tls=self.tls,
                ),
            )
            self.api = self._bind(
                "api_listen",
                lambda address: ApiServer(
                    address,
                    self.store.reader,
                    stats=self.stats,
                    query_timeout=settings.query_timeout_seconds,
                    sql_timeout=settings.sql_timeout_seconds,
                    sql_max_rows=settings.sql_max_rows,
                    sql_max_concurrent=settings.sql_max_concurrent,
                    sql_max_result_bytes=settings.sql_max_result_mib * 1024 * 1024,
                    receive_timeout=settings.receive_timeout_seconds,
                    max_connections=settings.http_max_connections,
                    metrics=self.metrics,
                    read_tokens=self.read_tokens,
                    # an import writes: the ingest tokens guard it, the read tokens while none is set
                    write_tokens=self.read_tokens if self.ingest_tokens.open else self.ingest_tokens,
                    tls=self.tls,
                    health=self.store.health,
                    coverage=self.coverage,
                    import_revenue=self.import_revenue,
                    timezone=settings.timezone,
                    plan_property=settings.plan_property,
                ),
            )
        except SettingsError:
            if self.otlp_http is not None:
                self.otlp_http.stop()
            self.grpc_server.stop(0)
            self._close_unstarted()
            raise
        self.otlp_http_url = _url(self.otlp_http, settings.http_listen)
        self.api_url = _url(self.api, settings.api_listen)
        self.grpc_server.start()
        self.otlp_http.start()
        self.api.start()
        self.metrics.start()
        self.activity.start()
        log.info(
            "user-metrics %s listening: OTLP gRPC and queries on %s; OTLP/HTTP on %s; HTTP API on %s; "
            "database %s (DuckDB %s); dashboard at %s/",
            __version__,
            self.grpc_address,
            self.otlp_http_url,
            self.api_url,
            Path(settings.db).resolve(),
            duckdb.__version__,
            _url(self.api, settings.api_listen, browsable=True),
        )
        split = self.split
        if split.splits:
            log.info("ingest path: %s (binary OTLP bodies are split before mapping)", split.path)
        else:
            log.info("ingest path: python (%s)", split.reason)
        for tokens, what in ((self.ingest_tokens, "sending spans"), (self.read_tokens, "reading")):
            if tokens.open:
                log.info("no %s_tokens set: %s needs no token", tokens.purpose, what)
        _settle_gc()

    def import_revenue(
        self, data: bytes, fmt: str | None, mapping: Mapping[str, str], tz: str | None, source: str
    ) -> tuple[int, int]:
        """Import revenue records into the store: (new, unchanged); ``tz`` None: the timezone setting."""
        tz = tz or getattr(self.settings, "timezone", None) or None
        return import_revenue(self.store, data, fmt, mapping, tz, source)

    def _bind(self, name: str, make: Callable[[tuple[str, int]], S]) -> S:
        address = getattr(self.settings, name)
        try:
            return make(split_address(address, name))
        except OSError as exc:
            raise _cannot_listen(name, address, exc) from exc

    def _close_unstarted(self) -> None:
        """Close the store of a start that failed, and remove the database files it created."""
        self.store.close()
        for path in self._new_files:
            path.unlink(missing_ok=True)

    def stop(self, grace: float = 10.0) -> None:
        """Stop taking requests, finish the ones in flight, commit and close the database."""
        self.activity.stop()
        self.metrics.stop()
        if self.api is not None:
            self.api.stop()
        if self.otlp_http is not None:
            self.otlp_http.stop()
        self.grpc_server.stop(grace)
        self.store.close()
        log.info(
            "user-metrics stopped: %d spans stored, %d duplicates ignored, %d rejected",
            self.stats.spans_stored,
            self.stats.spans_duplicate,
            sum(self.stats.spans_rejected.values()),
        )


def _load_tls(settings: Settings) -> ssl.SSLContext | None:
    if not settings.tls_cert_file:
        return None
    try:
        return tls_context(settings.tls_cert_file, settings.tls_key_file)
    except (OSError, ssl.SSLError) as exc:
        raise SettingsError(
            f"cannot load TLS certificate {settings.tls_cert_file} with key {settings.tls_key_file}: {exc}"
        ) from exc


def _grpc_credentials(settings: Settings) -> grpc.ServerCredentials:
    key = Path(settings.tls_key_file).read_bytes()
    chain = Path(settings.tls_cert_file).read_bytes()
    return grpc.ssl_server_credentials([(key, chain)])


def _database_files(db: str) -> list[Path]:
    """The files DuckDB makes for a database: the file and its write-ahead log."""
    return [Path(db), Path(db + ".wal")]


def _cannot_listen(name: str, address: str, exc: Exception) -> SettingsError:
    """Why the service cannot start, and which flag or variable chooses another address."""
    spec = next(s for s in SPECS if s.name == name)
    return SettingsError(
        f"cannot listen on {address} ({name}): {str(exc).rstrip('.')}. Is another server (another "
        f"user-metrics?) using it? Choose a free address with {spec.flag} HOST:PORT or {spec.env}; "
        "port 0 picks one."
    )


def _url(server: BackgroundServer, listen: str, browsable: bool = False) -> str:
    """The server's URL; ``browsable``: as a browser on this machine reaches it (not 0.0.0.0)."""
    host, _ = split_address(listen, "listen")
    if browsable:
        host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    return f"{server.scheme}://{_join(host, server.port)}"


def _join(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
