"""The app factory: builds the store (or the lake: ``node.py``), the pipeline and the servers from
Settings. A reader-only node (``ingest`` off) has no pipeline: no OTLP receivers, the gRPC server
serves only the query service."""

from __future__ import annotations

import gc
import logging
import ssl
import time
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
from user_metrics.node import Node
from user_metrics.serve.activity import INTERVAL_SECONDS, ActivityLog, count_users
from user_metrics.serve.grpc_api import user_metrics_service_handler
from user_metrics.serve.http_api import ApiServer
from user_metrics.serve.lake_metrics import lake_families
from user_metrics.serve.metrics import RenderedMetrics, UsageCollector
from user_metrics.settings import SPECS, Settings, SettingsError, split_address
from user_metrics.stats import Stats

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
        # The store, the lake, or both; the plan prices of the settings written where readers read.
        self.node = Node(settings, self.stats)
        self.store = self.node.store  # None on a reader-only node
        # The coverage report's live part: as many (service, scope) entries as /metrics has values.
        self.coverage = CoverageCounts(self.stats, settings.metrics_max_values)
        self.max_message_bytes = settings.max_message_mib * 1024 * 1024
        rpcs = Rpcs(settings.grpc_workers, settings.receive_timeout_seconds, self.stats)
        receivers = []
        self.ingestor: Ingestor | None = None
        if self.store is not None:
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
            receivers.append(trace_service_handler(self.ingestor, rpcs))
        self.grpc_server = GrpcServer(
            rpcs,
            handlers=[
                *receivers,  # none on a reader-only node: an OTLP Export is answered UNIMPLEMENTED
                user_metrics_service_handler(
                    self.node.reader,
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
            self.node.reader,
            self.stats,
            lambda: self.node.queue,
            max_users=settings.metrics_max_users,
            property_keys=settings.metrics_properties,
            max_values=settings.metrics_max_values,
            coverage=self.coverage,
            store_families=settings.store_metrics,
            more=(lambda: lake_families(self.node.figures())) if settings.lake else tuple,
        )
        self.metrics = RenderedMetrics(collector, self._metrics_version, settings.metrics_refresh_seconds)
        self.activity = ActivityLog(self.stats, lambda: count_users(self.node.reader), activity_interval)
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
            ingestor = self.ingestor
            if ingestor is not None:  # no OTLP/HTTP listener on a reader-only node
                self.otlp_http = self._bind(
                    "http_listen",
                    lambda address: OtlpHttpServer(
                        address,
                        ingestor,
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
                    self.node.reader,
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
                    health=self.node.health,
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
        self.api_url = _url(self.api, settings.api_listen)
        self.node.start(port)  # shipping to the lake, on a receiver in lake mode
        self.grpc_server.start()
        if self.otlp_http is not None:
            self.otlp_http_url = _url(self.otlp_http, settings.http_listen)
            self.otlp_http.start()
        self.api.start()
        self.metrics.start()
        self.activity.start()
        self._log_start()

    def _log_start(self) -> None:
        settings = self.settings
        dashboard = _url(self.api, settings.api_listen, browsable=True) if self.api is not None else ""
        if self.store is not None:
            log.info(
                "user-metrics %s listening: OTLP gRPC and queries on %s; OTLP/HTTP on %s; HTTP API on %s; "
                "database %s (DuckDB %s); dashboard at %s/",
                __version__,
                self.grpc_address,
                self.otlp_http_url,
                self.api_url,
                Path(settings.db).resolve(),
                duckdb.__version__,
                dashboard,
            )
        else:
            log.info(
                "user-metrics %s listening: gRPC queries on %s; HTTP API on %s; reader-only node (ingest "
                "off: no OTLP receivers, no database file) (DuckDB %s); dashboard at %s/",
                __version__,
                self.grpc_address,
                self.api_url,
                duckdb.__version__,
                dashboard,
            )
        if self.node.lake is not None:
            log.info(
                "%s; ingest %s; /metrics %s the store's families (lake_store_metrics %s)",
                self.node.describe(),
                "on" if settings.ingest else "off",
                "renders" if settings.store_metrics else "leaves out",
                settings.lake_store_metrics,
            )
        split = self.split
        if self.store is None:
            pass  # no ingest path: nothing is received
        elif split.splits:
            log.info("ingest path: %s (binary OTLP bodies are split before mapping)", split.path)
        else:
            log.info("ingest path: python (%s)", split.reason)
        for tokens, what in ((self.ingest_tokens, "sending spans"), (self.read_tokens, "reading")):
            if tokens.open and (self.store is not None or tokens is self.read_tokens):
                log.info("no %s_tokens set: %s needs no token", tokens.purpose, what)
        _settle_gc()

    def import_revenue(
        self, data: bytes, fmt: str | None, mapping: Mapping[str, str], tz: str | None, source: str
    ) -> tuple[int, int]:
        """Import revenue records where the readers read (the store, or the lake): (new, unchanged);
        ``tz`` None: the timezone setting."""
        tz = tz or getattr(self.settings, "timezone", None) or None
        return import_revenue(self.node.writes, data, fmt, mapping, tz, source)  # type: ignore[arg-type]

    def _metrics_version(self) -> object:
        """What changes when /metrics should be rendered again: this node's exports and commits,
        and in lake mode the clock too (other nodes change the lake)."""
        s = self.stats
        tick = (
            int(time.monotonic() / max(self.settings.metrics_refresh_seconds, 0.001)) if self.node.lake else 0
        )
        return (s.exports, s.commits, s.compactions, tick)

    def _bind(self, name: str, make: Callable[[tuple[str, int]], S]) -> S:
        address = getattr(self.settings, name)
        try:
            return make(split_address(address, name))
        except OSError as exc:
            raise _cannot_listen(name, address, exc) from exc

    def _close_unstarted(self) -> None:
        """Close the store of a start that failed, and remove the database files it created."""
        self.node.close(remove_new=True)

    def stop(self, grace: float = 10.0) -> None:
        """Stop taking requests, finish the ones in flight, commit and close the database."""
        self.activity.stop()
        self.metrics.stop()
        if self.api is not None:
            self.api.stop()
        if self.otlp_http is not None:
            self.otlp_http.stop()
        self.grpc_server.stop(grace)
        self.node.close(grace)  # every acknowledged row committed, and shipped to the lake
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
