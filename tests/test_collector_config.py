"""collector-config/otelcol.yaml forwards traces to the service's default endpoint."""

from __future__ import annotations

from pathlib import Path

import yaml

from user_metrics.settings import Settings

CONFIG = Path(__file__).parent.parent / "collector-config" / "otelcol.yaml"


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
