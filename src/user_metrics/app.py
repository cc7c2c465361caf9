"""The app factory: builds the store, the pipeline and the servers from Settings."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import duckdb
import grpc

from user_metrics import __version__
from user_metrics.api import ApiServer
from user_metrics.ingest import Ingestor
from user_metrics.mapping import compile_conventions
from user_metrics.pricing import Pricer, load_price_file
from user_metrics.prom import RenderedMetrics, UsageCollector, registry
from user_metrics.query_grpc import user_metrics_service_handler
from user_metrics.receivers.grpc import trace_service_handler
from user_metrics.settings import Settings, SettingsError, split_address
from user_metrics.stats import Stats
from user_metrics.store import Store

log = logging.getLogger("user_metrics")


class App:
    """One running service: ``start()``, then ``stop()`` flushes everything acknowledged."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.stats = Stats()
        custom = load_price_file(settings.price_file) if settings.price_file else []
        self.pricer = Pricer(custom)
        self.conventions = compile_conventions(settings.property_keys, settings.max_value_length)
        self.store = Store(settings.db, self.stats, memory_limit_mib=settings.memory_limit_mib)
        self.ingestor = Ingestor(self.conventions, self.pricer, self.store, self.stats)
        limit = settings.max_message_mib * 1024 * 1024
        self._executor = ThreadPoolExecutor(settings.grpc_workers, thread_name_prefix="grpc")
        self.grpc_server = grpc.server(
            self._executor,
            handlers=[trace_service_handler(self.ingestor), user_metrics_service_handler(self.store.reader)],
            options=[
                ("grpc.max_receive_message_length", limit),
                # Without this gRPC sets SO_REUSEPORT and a second server silently shares the port.
                ("grpc.so_reuseport", 0),
                ("grpc.max_send_message_length", 16 * 1024 * 1024),
            ],
        )
        self.grpc_address = ""
        collector = UsageCollector(
            self.store.reader,
            self.stats,
            lambda: self.store.queue_depth,
            max_users=settings.metrics_max_users,
            property_keys=settings.metrics_properties,
        )
        self.metrics = RenderedMetrics(
            registry(collector),
            lambda: (self.stats.exports, self.stats.commits, self.stats.compactions),
            settings.metrics_refresh_seconds,
        )
        self.api: ApiServer | None = None
        self.api_url = ""

    def start(self) -> None:
        """Bind and start serving; logs where it listens and which database it writes."""
        host, _port = split_address(self.settings.grpc_listen, "grpc_listen")
        try:
            port = self.grpc_server.add_insecure_port(self.settings.grpc_listen)
        except RuntimeError as exc:
            self.store.close()
            raise SettingsError(f"cannot listen on {self.settings.grpc_listen}: {exc}") from exc
        self.grpc_address = _join(host, port)
        api_host, api_port = split_address(self.settings.api_listen, "api_listen")
        try:
            self.api = ApiServer(
                (api_host, api_port),
                self.store.reader,
                sql_timeout=self.settings.sql_timeout_seconds,
                sql_max_rows=self.settings.sql_max_rows,
                metrics=self.metrics,
            )
        except OSError as exc:
            self.grpc_server.stop(0)
            self.store.close()
            raise SettingsError(f"cannot listen on {self.settings.api_listen}: {exc}") from exc
        self.api_url = f"http://{_join(api_host, self.api.port)}"
        self.grpc_server.start()
        self.api.start()
        self.metrics.start()
        log.info(
            "user-metrics %s listening: OTLP gRPC and queries on %s; HTTP API on %s; database %s (DuckDB %s)",
            __version__,
            self.grpc_address,
            self.api_url,
            Path(self.settings.db).resolve(),
            duckdb.__version__,
        )

    def stop(self, grace: float = 10.0) -> None:
        """Stop taking requests, finish the ones in flight, commit and close the database."""
        self.metrics.stop()
        if self.api is not None:
            self.api.stop()
        self.grpc_server.stop(grace).wait()
        self._executor.shutdown(wait=True)
        self.store.close()
        log.info(
            "user-metrics stopped: %d spans stored, %d duplicates ignored, %d rejected",
            self.stats.spans_stored,
            self.stats.spans_duplicate,
            sum(self.stats.spans_rejected.values()),
        )


def _join(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
