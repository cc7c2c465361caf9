"""The coverage report as an operator meets it: a running `user-metrics serve`, spans sent over gRPC
from two instrumentation scopes, and the answer of GET /api/v1/coverage, `user-metrics coverage`,
the Python client and /metrics."""

from __future__ import annotations

import csv
import io
import json
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple
from urllib.request import urlopen

import grpc
import pytest
from conftest import Service, cuts, scrape
from coverage_spans import COMPLETE, PARTIAL, two_scopes
from google.protobuf.json_format import MessageToDict
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from otlp import attributes, chat, span
from senders import raw_export
from servers import cli, start_server_with_api

from user_metrics import connect
from user_metrics.coverage_counts import MAX_KEY_LENGTH, MAX_KEYS, OTHER
from user_metrics.v1 import user_metrics_pb2 as pb
from user_metrics.v1.user_metrics_pb2_grpc import UserMetricsServiceStub


class Running(NamedTuple):
    db: Path
    url: str  # the HTTP API's base URL
    target: str  # the gRPC address (OTLP and the query service)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    db = tmp_path_factory.mktemp("coverage") / "um.duckdb"
    proc, target, url = start_server_with_api(db, "--metrics-refresh-seconds", "0")
    answer = raw_export(target, two_scopes().SerializeToString())
    assert not answer.partial_success.rejected_spans, answer.partial_success.error_message
    yield Running(db, url, target)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=30)


def http_json(url: str) -> Any:
    with urlopen(url, timeout=30) as response:
        return json.loads(response.read())


def by_scope(items: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(i["scope_name"], i["scope_version"]): i for i in items}


class TestTheReport:
    def test_shares_per_service_and_scope(self, server: Running) -> None:
        """Each (service, scope name, version) has its stored requests and the shares with a user id,
        a session and a cost: 1 for the complete scope, 0 for the one that lacks them."""
        url = server.url
        scopes = by_scope(http_json(f"{url}/api/v1/coverage")["scopes"])
        assert set(scopes) == {COMPLETE, PARTIAL}
        full, part = scopes[COMPLETE], scopes[PARTIAL]
        assert (full["service_name"], full["requests"], full["with_user"], full["with_session"]) == (
            "shop",
            4,
            4,
            4,
        )
        assert (full["with_cost"], full["user_share"], full["session_share"], full["cost_share"]) == (
            4,
            1,
            1,
            1,
        )
        assert (part["requests"], part["with_user"], part["with_session"], part["with_cost"]) == (3, 0, 0, 0)
        assert (part["user_share"], part["session_share"], part["cost_share"]) == (0, 0, 0)

    def test_skipped_llm_looking_spans_and_unread_keys_most_frequent_first(self, server: Running) -> None:
        """The spans the rules skipped that look like LLM calls are named with their keys (agent and
        HTTP spans are not); keys on stored LLM spans that no convention reads come most frequent first."""
        url = server.url
        answer = http_json(f"{url}/api/v1/coverage")
        assert answer["live"] is True and answer["live_since"]
        spans = by_scope(answer["spans"])
        part = spans[PARTIAL]
        assert (part["llm_spans"], part["llm_like_skipped"]) == (3, 2)
        assert part["skipped_span_names"] == [{"key": "embed text-embedding-3-small", "count": 2}]
        assert part["skipped_keys"] == [
            {"key": k, "count": 2}
            for k in ("gen_ai.request.model", "gen_ai.system", "gen_ai.usage.total_tokens")
        ]
        assert part["unread_keys"] == [
            {"key": "acme.customer", "count": 3},
            {"key": "acme.tier", "count": 2},
            {"key": "gen_ai.openai.response.system_fingerprint", "count": 1},
        ]
        full = spans[COMPLETE]
        assert (full["llm_spans"], full["llm_like_skipped"], full["unread_keys"]) == (4, 0, [])
        assert answer["spans"][0]["scope_name"] == PARTIAL[0], "the scope with skipped spans comes first"

    def test_filters_and_limit(self, server: Running) -> None:
        """A service filter applies to both parts; ``limit`` cuts each key list; a bad one is a 400."""
        url = server.url
        assert http_json(f"{url}/api/v1/coverage?service=other") | {
            "since": 0,
            "until": 0,
            "live_since": 0,
        } == {"since": 0, "until": 0, "live_since": 0, "scopes": [], "live": True, "spans": []}
        part = by_scope(http_json(f"{url}/api/v1/coverage?limit=1")["spans"])[PARTIAL]
        assert part["unread_keys"] == [{"key": "acme.customer", "count": 3}]
        status, answer = _get(f"{url}/api/v1/coverage?limit=0")
        assert status == 400 and answer["error"].startswith("limit: must be between 1 and 1000")
        status, answer = _get(f"{url}/api/v1/coverage?bucket=day")
        assert status == 400 and "unknown parameter" in answer["error"]

    def test_the_python_client_answers_the_same(self, server: Running) -> None:
        """``connect(url=...).coverage()`` gives the result objects of the HTTP answer."""
        url = server.url
        with connect(url=url) as client:
            result = client.coverage()
        part = next(s for s in result.spans if s.scope_name == PARTIAL[0])
        assert part.unread_keys[0].key == "acme.customer" and result.live
        assert {(s.scope_name, s.user_share) for s in result.scopes} == {
            (COMPLETE[0], 1.0),
            (PARTIAL[0], 0.0),
        }

    def test_grpc_answers_the_same(self, server: Running) -> None:
        """GetCoverage on the gRPC port answers the HTTP report field for field (exact shares, the
        key lists in order, unset for a null service or scope); its limit and filters work the same."""
        with grpc.insecure_channel(server.target) as channel:
            stub = UserMetricsServiceStub(channel)
            got = MessageToDict(
                stub.GetCoverage(pb.GetCoverageRequest(), timeout=30),
                preserving_proto_field_name=True,
                always_print_fields_with_no_presence=True,
            )
            cut = stub.GetCoverage(pb.GetCoverageRequest(limit=1), timeout=30)
            other = stub.GetCoverage(pb.GetCoverageRequest(filters=pb.Filters(service="other")), timeout=30)
            with pytest.raises(grpc.RpcError) as bad:
                stub.GetCoverage(pb.GetCoverageRequest(limit=1001), timeout=30)
        answer = http_json(f"{server.url}/api/v1/coverage")
        for part in ("scopes", "spans"):
            for item in got[part]:
                for key, value in list(item.items()):
                    if isinstance(value, str) and key not in ("service_name", "scope_name", "scope_version"):
                        item[key] = int(value)  # int64 is text in proto JSON
                    if isinstance(value, list):
                        item[key] = [{"key": k["key"], "count": int(k["count"])} for k in value]
        assert got["scopes"] == answer["scopes"] and got["spans"] == answer["spans"]
        assert got["live"] is True and got["live_since"] and got["since"]
        part = next(s for s in cut.spans if s.scope_name == PARTIAL[0])
        assert [(k.key, k.count) for k in part.unread_keys] == [("acme.customer", 3)]
        assert (len(other.scopes), len(other.spans), other.live) == (0, 0, True)
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert bad.value.details().startswith("limit: must be between 1 and 1000")

    def test_metrics_count_per_scope_and_show_the_shares(self, server: Running) -> None:
        """/metrics: skipped LLM-looking spans and unread key occurrences per (service, scope), and the
        last 24 hours' shares as gauges."""
        url = server.url
        families = {f.name: f for f in scrape(url)}
        skipped = {
            s.labels["scope"]: s.value
            for s in families["user_metrics_llm_like_spans_skipped"].samples
            if s.name.endswith("_total")
        }
        unread = {
            (s.labels["service"], s.labels["scope"], s.labels["scope_version"]): s.value
            for s in families["user_metrics_unread_attribute_keys"].samples
            if s.name.endswith("_total")
        }
        assert skipped == {"acme.complete": 0, "acme.partial": 2}
        assert unread == {("shop", "acme.complete", "1.0"): 0, ("shop", "acme.partial", "0.3"): 6}
        shares = {
            (s.labels["scope"], s.labels["field"]): s.value
            for s in families["user_metrics_coverage_share"].samples
        }
        assert shares == {
            **{("acme.complete", f): 1.0 for f in ("user", "session", "cost")},
            **{("acme.partial", f): 0.0 for f in ("user", "session", "cost")},
        }


def _get(url: str) -> tuple[int, Any]:
    import urllib.error

    try:
        return 200, http_json(url)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


class TestTheCommand:
    def test_json_is_the_http_answer_and_the_table_names_what_is_missing(self, server: Running) -> None:
        """`user-metrics coverage --format json` prints the API's answer; the table shows the shares in
        percent and lists the skipped span names and unread keys."""
        url = server.url
        done = cli("coverage", "--url", url, "--since", "7d", "--format", "json")
        assert done.returncode == 0, done.stderr
        printed = json.loads(done.stdout)
        served = http_json(f"{url}/api/v1/coverage?since=7d&limit=20")
        for answer in (printed, served):  # the window ends when each was asked
            answer.pop("since"), answer.pop("until")
        assert printed == served
        table = cli("coverage", "--url", url)
        assert table.returncode == 0, table.stderr
        lines = table.stdout.splitlines()
        assert any(
            line.split() == ["shop", "acme.partial", "0.3", "3", "0.0", "%", "0.0", "%", "0.0", "%"]
            for line in lines
        )
        assert any(line.split()[:4] == ["shop", "acme.complete", "1.0", "4"] for line in lines)
        assert any("skipped span" in line and "embed text-embedding-3-small" in line for line in lines)
        assert any(line.split()[-3:] == ["key", "acme.customer", "3"] for line in lines)
        assert "seen by the running service since" in table.stdout

    def test_csv_is_one_long_table(self, server: Running) -> None:
        """CSV: one row per figure or key, (service, scope, version, item, key, count)."""
        url = server.url
        done = cli("coverage", "--url", url, "--format", "csv")
        assert done.returncode == 0, done.stderr
        rows = list(csv.reader(io.StringIO(done.stdout)))
        assert rows[0] == ["service_name", "scope_name", "scope_version", "item", "key", "count"]
        assert ["shop", "acme.partial", "0.3", "with_user", "", "0"] in rows
        assert ["shop", "acme.partial", "0.3", "unread_keys", "acme.tier", "2"] in rows
        assert ["shop", "acme.partial", "0.3", "llm_like_skipped", "", "2"] in rows


def test_reading_the_file_gives_the_stored_part_and_says_so(tmp_path: Path) -> None:
    """With --db only the stored shares are known: the answer says `live` false and the table says
    that the key report is the running service's."""
    svc = Service(tmp_path / "um.duckdb")
    svc.start().ingestor.export(two_scopes())
    svc.stop()
    done = cli("coverage", "--db", str(svc.db), "--format", "json")
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert (answer["live"], answer["live_since"], answer["spans"]) == (False, None, [])
    assert {s["scope_name"]: s["requests"] for s in answer["scopes"]} == {
        "acme.complete": 4,
        "acme.partial": 3,
    }
    table = cli("coverage", "--db", str(svc.db))
    assert "only the stored shares" in table.stdout and "--url" in table.stdout


class TestBounds:
    def test_scopes_beyond_metrics_max_values_share_one_other_entry(self, tmp_path: Path) -> None:
        """With metrics_max_values 1 the first (service, scope) keeps its entry; the spans of the next
        are counted under (other) and in user_metrics_limit_cuts_total{limit="coverage_scopes"}."""
        svc = Service(tmp_path / "um.duckdb", metrics_max_values=1, metrics_refresh_seconds=0)
        app = svc.start()
        try:
            app.ingestor.export(two_scopes())
            answer = http_json(f"{app.api_url}/api/v1/coverage")
            entries = {(e["service_name"], e["scope_name"]): e for e in answer["spans"]}
            assert set(entries) == {("shop", "acme.complete"), (OTHER, OTHER)}
            assert (entries[(OTHER, OTHER)]["llm_like_skipped"], entries[(OTHER, OTHER)]["llm_spans"]) == (
                2,
                3,
            )
            assert cuts(app.api_url)["coverage_scopes"] == 5
            assert len(answer["scopes"]) == 2, "the stored shares are exact, not bounded"
        finally:
            svc.stop()

    def test_keys_beyond_the_bounds_are_counted_under_other(self, tmp_path: Path) -> None:
        """A list keeps at most MAX_KEYS distinct keys of at most MAX_KEY_LENGTH characters; the other
        occurrences are counted under (other) and in user_metrics_limit_cuts_total{limit="coverage_keys"}."""
        svc = Service(tmp_path / "um.duckdb", metrics_refresh_seconds=0)
        app = svc.start()
        try:
            many = chat("u1", **{f"acme.k{i:04d}": i for i in range(MAX_KEYS + 5)})
            long_key = chat("u1", **{"acme." + "x" * MAX_KEY_LENGTH: 1})
            req = ExportTraceServiceRequest()
            rs = req.resource_spans.add()
            rs.resource.attributes.extend(attributes({"service.name": "wide"}))
            rs.scope_spans.add().spans.extend([span(many), span(long_key)])
            app.ingestor.export(req)
            (entry,) = http_json(f"{app.api_url}/api/v1/coverage?limit=1000")["spans"]
            assert entry["unread_keys"][0] == {"key": OTHER, "count": 6}
            assert len(entry["unread_keys"]) == MAX_KEYS
            assert cuts(app.api_url)["coverage_keys"] == 6
        finally:
            svc.stop()
