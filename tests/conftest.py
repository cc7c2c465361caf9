"""Shared fixtures: a real service on a free loopback port, real DuckDB files, capture loading."""

from __future__ import annotations

import importlib
import json
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest
import trustme
from prometheus_client.parser import text_string_to_metric_families

from user_metrics.app import App
from user_metrics.settings import Settings
from user_metrics.store.batches import to_arrow
from user_metrics.store.records import RequestRecord

# The query tests' fixtures: `served`, a service holding query_data's spans, and `con`, a reader of
# it. A module that defines its own `served` or `con` uses its own.
pytest_plugins = ["query_service", "pg"]  # pg: `pg_cluster`, `lake_catalog` (a throwaway PostgreSQL)

CAPTURES = Path(__file__).parent / "captures"
CAPTURE_NAMES = sorted(p.name for p in CAPTURES.iterdir() if p.is_dir())


def capture_expected(name: str) -> list[dict[str, Any]]:
    """The ground truth rows of one capture (one per call)."""
    lines = (CAPTURES / name / "expected.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def capture_settings(name: str) -> dict[str, tuple[str, ...]]:
    """The settings one capture's service ran with (its settings.json: the [conventions] entries),
    as Settings fields; {} when it ran with the defaults."""
    path = CAPTURES / name / "settings.json"
    if not path.exists():
        return {}
    return {key: tuple(value) for key, value in json.loads(path.read_text())["conventions"].items()}


def capture_spans(name: str) -> dict[str, dict[str, Any]]:
    """The spans of one capture as the library sent them (spans.json), by span id."""
    return {s["span_id"]: s for s in json.loads((CAPTURES / name / "spans.json").read_text())}


def capture_requests(name: str) -> list[bytes]:
    """The raw Export requests of one capture, byte for byte."""
    return [p.read_bytes() for p in sorted((CAPTURES / name / "raw").glob("*.pb"))]


def read_requests(db: Path, where: str = "TRUE") -> list[dict[str, Any]]:
    """All rows of `requests` (read-only; the server must be stopped)."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        cur = con.execute(f"SELECT * FROM requests WHERE {where} ORDER BY start_time, span_id")
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
    finally:
        con.close()


_SPAWNED: list[subprocess.Popen[Any]] = []


def spawn(*args: Any, **kwargs: Any) -> subprocess.Popen[Any]:
    """``subprocess.Popen``, and the process is killed after the test if it still runs then (a
    test that fails half-way, or whose wait for a stop timed out, leaves no server behind)."""
    proc: subprocess.Popen[Any] = subprocess.Popen(*args, **kwargs)
    _SPAWNED.append(proc)
    return proc


def _reap(since: int) -> None:
    while len(_SPAWNED) > since:
        proc = _SPAWNED.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=60)


@pytest.fixture(autouse=True)
def _reap_spawned_by_the_test() -> Iterator[None]:
    """Kill what the test (not a wider fixture, set up before it) spawned and left running."""
    before = len(_SPAWNED)
    yield
    _reap(before)


@pytest.fixture(autouse=True, scope="session")
def _reap_spawned_at_the_end() -> Iterator[None]:
    yield
    _reap(0)


def scrape(api_url: str, token: str | None = None) -> list[Any]:
    """The metric families /metrics serves (with the read token, if given)."""
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    request = urllib.request.Request(f"{api_url}/metrics", headers=headers)
    with urllib.request.urlopen(request, timeout=60) as response:
        return list(text_string_to_metric_families(response.read().decode()))


def counters(api_url: str, family: str, label: str, token: str | None = None) -> dict[str, float]:
    """A counter family's ``_total`` samples on /metrics by the value of one label."""
    return {
        sample.labels[label]: sample.value
        for fam in scrape(api_url, token)
        if fam.name == family
        for sample in fam.samples
        if sample.name.endswith("_total")
    }


def counter_total(api_url: str, family: str, **labels: str) -> float:
    """The sum of a counter family's ``_total`` samples on /metrics, over those with ``labels``."""
    return sum(
        sample.value
        for fam in scrape(api_url)
        if fam.name == family
        for sample in fam.samples
        if sample.name.endswith("_total") and all(sample.labels.get(k) == v for k, v in labels.items())
    )


class Service:
    """Starts and restarts a real App on a DuckDB file; `target` is its gRPC address."""

    def __init__(self, db: Path, **overrides: Any) -> None:
        self.settings = replace(
            Settings(
                db=str(db),
                grpc_listen="127.0.0.1:0",
                api_listen="127.0.0.1:0",
                http_listen="127.0.0.1:0",
            ),
            **overrides,
        )
        self.db = db
        self.app: App | None = None

    @property
    def target(self) -> str:
        assert self.app is not None
        return self.app.grpc_address

    def start(self) -> App:
        self.app = App(self.settings)
        self.app.start()
        return self.app

    def stop(self) -> None:
        if self.app is not None:
            self.app.stop()
            self.app = None

    def restart(self) -> App:
        """Stop, then start again on the same file and the same port."""
        port = self.target.rsplit(":", 1)[1]
        self.stop()
        self.settings = replace(self.settings, grpc_listen=f"127.0.0.1:{port}")
        return self.start()

    def rows(self, where: str = "TRUE") -> list[dict[str, Any]]:
        """Stop the service (it holds the file) and read what it stored."""
        self.stop()
        return read_requests(self.db, where)


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    svc = Service(tmp_path / "user_metrics.duckdb")
    svc.start()
    yield svc
    svc.stop()


def _split_path() -> str:
    """The split path to test: the native scanner where it is built, else the split in Python."""
    try:
        importlib.import_module("user_metrics.ingest._otlp_scan")
    except ImportError:
        return "reference"
    return "native"


# The two ingest paths of binary bodies (span_split.py): the whole request mapped, and the split.
INGEST_PATHS = ("python", _split_path())


@pytest.fixture(params=INGEST_PATHS)
def service_on_each_path(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Service]:
    """``service``, once on each ingest path (the ``ingest_path`` setting)."""
    path = "auto" if request.param == "native" else request.param
    svc = Service(tmp_path / "user_metrics.duckdb", ingest_path=path)
    svc.start()
    assert svc.app is not None and svc.app.ingestor.split.path == request.param
    yield svc
    svc.stop()


INGEST = "ingest-token-0123456789abcdef"


READ = "read-token-0123456789abcdef"


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A throwaway CA and a server certificate for 127.0.0.1, as PEM files."""
    directory = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    paths = {"ca": directory / "ca.pem", "cert": directory / "cert.pem", "key": directory / "key.pem"}
    ca.cert_pem.write_to_path(str(paths["ca"]))
    cert.cert_chain_pems[0].write_to_path(str(paths["cert"]))
    for extra in cert.cert_chain_pems[1:]:
        with open(paths["cert"], "ab") as out:
            out.write(extra.bytes())
    cert.private_key_pem.write_to_path(str(paths["key"]))
    return paths


def cuts(api_url: str, token: str | None = None) -> dict[str, float]:
    """user_metrics_limit_cuts_total by limit, as scraped (with the read token, if given)."""
    return counters(api_url, "user_metrics_limit_cuts", "limit", token)


def one_row_table(span_letter: str, start_ns: int | None = None) -> pa.Table:
    """The Arrow rows of one priced LLM call whose span id is 16 times ``span_letter`` (trace
    'a' * 32, user 'u'), started at ``start_ns`` (default: now)."""
    record = RequestRecord(
        trace_id="a" * 32,
        span_id=span_letter * 16,
        parent_span_id=None,
        start_time_unix_nano=time.time_ns() if start_ns is None else start_ns,
        duration_ms=250.0,
        user_id="u",
        session_id=None,
        service_name="svc",
        environment=None,
        operation="chat",
        provider="openai",
        request_model="gpt-4o-mini",
        response_model=None,
        input_tokens=10,
        output_tokens=5,
        cache_read_tokens=None,
        cache_write_tokens=None,
        reasoning_tokens=None,
        cost_usd=None,
        cost_source=None,
        status="ok",
        error_type=None,
        streaming=None,
        properties={},
    )
    return to_arrow([record], [1000], ["computed"])
