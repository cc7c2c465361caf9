"""collector-config/: the single-service Collector configuration, and the lake cluster's examples.

``otelcol.yaml`` forwards traces to the service's default endpoint. ``load_balancing.yaml`` routes
by trace id to the receivers ``lake/run-local.sh`` starts (static resolver) or to a DNS name
(``lake/compose.yaml``); the script and the Compose file give every node the same catalog and data
path, and the reader ingest off. No Collector runs here (otelcol-contrib is not a Python package):
these tests check the files against each other and against the service's settings.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import yaml

from user_metrics.settings import Settings

CONFIGS = Path(__file__).parent.parent / "collector-config"
CONFIG = CONFIGS / "otelcol.yaml"
LOAD_BALANCING = CONFIGS / "load_balancing.yaml"
RUN_LOCAL = CONFIGS / "lake" / "run-local.sh"
COMPOSE = CONFIGS / "lake" / "compose.yaml"


def test_traces_pipeline_exports_to_the_default_grpc_endpoint() -> None:
    """The traces pipeline's otlp_grpc exporter targets 127.0.0.1:4317 with gzip, a queue, retries and auth."""
    config = yaml.safe_load(CONFIG.read_text())
    exporters = config["service"]["pipelines"]["traces"]["exporters"]
    (name,) = [e for e in exporters if e.split("/")[0] == "otlp_grpc"]
    exporter = config["exporters"][name]
    assert exporter["endpoint"] == Settings().grpc_listen == "127.0.0.1:4317"
    assert exporter["compression"] == "gzip"
    assert exporter["sending_queue"]["enabled"] is True
    assert exporter["retry_on_failure"]["enabled"] is True
    assert exporter["headers"]["authorization"].startswith("Bearer ")
    for receiver in config["service"]["pipelines"]["traces"]["receivers"]:
        assert receiver in config["receivers"]


def _balancers(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: e for name, e in config["exporters"].items() if name.split("/")[0] == "loadbalancing"}


def test_load_balancing_routes_by_trace_id_with_a_static_and_a_dns_resolver() -> None:
    """Every loadbalancing exporter routes by traceID over OTLP with retries that never drop a batch
    for a fixed receiver set; one resolves statically, one by DNS; the pipeline uses one of them."""
    config = yaml.safe_load(LOAD_BALANCING.read_text())
    balancers = _balancers(config)
    assert {next(iter(e["resolver"])) for e in balancers.values()} == {"static", "dns"}
    for exporter in balancers.values():
        assert exporter["routing_key"] == "traceID"
        otlp = exporter["protocol"]["otlp"]
        assert "endpoint" not in otlp  # the resolver sets it per receiver
        assert otlp["retry_on_failure"]["enabled"] is True
        assert otlp["sending_queue"]["enabled"] is True
        assert otlp["headers"]["authorization"].startswith("Bearer ")
    static = next(e for e in balancers.values() if "static" in e["resolver"])
    assert static["protocol"]["otlp"]["retry_on_failure"]["max_elapsed_time"] == 0
    dns = next(e for e in balancers.values() if "dns" in e["resolver"])
    assert dns["retry_on_failure"]["max_elapsed_time"] == 0  # the load balancer's own level re-routes
    pipeline = config["service"]["pipelines"]["traces"]
    assert [e for e in pipeline["exporters"] if e in balancers] == pipeline["exporters"]
    assert all(r in config["receivers"] for r in pipeline["receivers"])
    assert all(p in config["processors"] for p in pipeline["processors"])


def _script_value(name: str) -> str:
    match = re.search(rf"^{name}=\"?([^\"\n]*)\"?$", RUN_LOCAL.read_text(), re.MULTILINE)
    assert match, name
    return match.group(1)


def test_the_static_resolver_lists_the_receivers_run_local_starts() -> None:
    """The static resolver's hostnames are the OTLP gRPC ports run-local.sh gives its receivers, and
    the Collector's own receiver does not collide with them."""
    config = yaml.safe_load(LOAD_BALANCING.read_text())
    static = next(e for e in _balancers(config).values() if "static" in e["resolver"])
    ports = _script_value("RECEIVER_GRPC_PORTS").split()
    assert len(ports) == 3
    assert static["resolver"]["static"]["hostnames"] == [f"127.0.0.1:{p}" for p in ports]
    collector_ports = {
        p["endpoint"].rsplit(":", 1)[1] for p in config["receivers"]["otlp"]["protocols"].values()
    }
    assert not collector_ports & set(ports)
    script = RUN_LOCAL.read_text()
    assert "load_balancing.yaml" in script


def test_run_local_is_valid_bash_and_gives_every_node_the_same_lake() -> None:
    """`bash -n` accepts the script; every `serve` names the same catalog and data path, each
    receiver a file of its own, and exactly one node (the reader) runs with --no-ingest."""
    subprocess.run(["bash", "-n", str(RUN_LOCAL)], check=True, capture_output=True)
    script = RUN_LOCAL.read_text()
    serves = re.findall(r"setsid \$USER_METRICS serve ([^&]*)&", script, re.DOTALL)
    assert len(serves) == 2  # the receivers' loop and the reader
    receiver, reader = serves
    for command in serves:
        assert '"${LAKE_ARGS[@]}"' in command
    assert 'LAKE_ARGS=(--lake "$CATALOG" --lake-data "$LAKE_DATA")' in script
    assert "--no-ingest" in reader and "--no-ingest" not in receiver
    assert '--db "$WORK/receiver-$n.duckdb"' in receiver and "--db" not in reader
    assert '--grpc-listen "127.0.0.1:$grpc_port"' in receiver
    assert "for grpc_port in $RECEIVER_GRPC_PORTS" in script
    assert "trap stop EXIT" in script  # Ctrl-C and any exit stop the nodes and PostgreSQL


def test_compose_services_share_one_lake_and_the_reader_does_not_ingest() -> None:
    """All user-metrics services run the same image with the same catalog and data path (mounted
    at it); each receiver has its own volume for its local file and answers to the DNS name the
    Collector resolves; the reader runs with ingest off and no local file; the Collector mounts
    load_balancing.yaml and switches its pipeline to the DNS exporter."""
    compose = yaml.safe_load(COMPOSE.read_text())
    services = compose["services"]
    nodes = {name: s for name, s in services.items() if s.get("command", [None])[0] == "serve"}
    assert set(nodes) == {"receiver-1", "receiver-2", "receiver-3", "reader"}
    lake = {
        (s["environment"]["USER_METRICS_LAKE"], s["environment"]["USER_METRICS_LAKE_DATA"])
        for s in nodes.values()
    }
    assert len(lake) == 1
    ((catalog, data),) = lake
    assert "password" not in catalog
    assert "dbname=lake" in catalog and "host=postgres" in catalog
    receivers = {name: s for name, s in nodes.items() if name != "reader"}
    locals_ = set()
    for service in nodes.values():
        volumes = dict(v.split(":", 1) for v in service["volumes"])  # volume -> mount
        assert volumes["lake-data"] == data
        locals_.update(v for v in volumes if v.startswith("receiver-"))
    assert locals_ == set(receivers)
    for name, service in receivers.items():
        assert "--no-ingest" not in service["command"]
        assert any(c.startswith("--db=/data/") for c in service["command"])
        assert f"{name}:/data" in service["volumes"]
        assert service["networks"]["default"]["aliases"] == ["receivers"]
    reader = nodes["reader"]["command"]
    assert "--no-ingest" in reader and not any(c.startswith("--db") for c in reader)

    collector = services["collector"]
    assert any(v.startswith("../load_balancing.yaml:") for v in collector["volumes"])
    assert collector["environment"]["USER_METRICS_RECEIVERS_DNS"] == "receivers"
    override = next(c for c in collector["command"] if c.startswith("--config=yaml:"))
    assert override.endswith("exporters: [loadbalancing/dns]")
    config = yaml.safe_load(LOAD_BALANCING.read_text())
    dns = config["exporters"]["loadbalancing/dns"]["resolver"]["dns"]
    assert dns["port"] == 4317
    assert all("--grpc-listen=0.0.0.0:4317" in s["command"] for s in receivers.values())
