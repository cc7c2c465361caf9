"""/metrics per-user lines written by DuckDB (serve/user_samples.py): byte for byte what
prometheus_client writes, in both formats, whatever the user ids; checked by promtool and a real
Prometheus too."""

from __future__ import annotations

import math
import random
import struct
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest
from conftest import Service
from metrics_reference import ReferenceCollector
from otlp import T0, chat, request, span
from prometheus_client.exposition import choose_encoder
from prometheus_client.utils import floatToGoString
from test_metrics import (
    _wait_for,
    needs_prometheus,
    needs_promtool,
    prometheus_scraping,
    promtool_check,
    samples,
    scrape,
)

from user_metrics.serve.metrics import UsageCollector
from user_metrics.serve.user_samples import go_float, go_int

# Ids that break a hand-written exposition: escapes, an attempt to close the labels early,
# UTF-8 of several widths, combining marks, separators Python's splitlines() splits on.
ODD_IDS = [
    'quote"d',
    "back\\slash",
    "new\nline",
    "literal\\n",
    "trailing\\",
    '",status="ok',
    'x"} 1\nfake_metric 2',
    "tab\there",
    "zoë 🙂",
    "日本語",
    "e\u0301",
    "line\u2028separator",
    "{curly}=,",
    " ",
]
ACCEPT = {
    "text": "",
    "openmetrics": "application/openmetrics-text; version=1.0.0",
    "text 1.0.0": "text/plain; version=1.0.0; escaping=allow-utf-8",
}


@pytest.fixture(scope="module")
def odd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """A service with the odd ids, big and small counts (Go's exponents start at 10 million)."""
    svc = Service(tmp_path_factory.mktemp("sql") / "um.duckdb", metrics_refresh_seconds=0)
    app = svc.start()
    spans = [
        span(
            chat(user, inp=10 ** (i % 10) + i, out=12_345_678 * (i % 3)),
            start=T0 + i * 10**9,
            error=i % 4 == 0,
        )
        for i, user in enumerate(ODD_IDS)
    ]
    spans += [span(chat(f"user-{i}", inp=i, out=7), start=T0 - i * 10**6) for i in range(300)]
    app.ingestor.export(request(spans))
    yield svc
    svc.stop()


def collectors(svc: Service, max_users: int) -> tuple[UsageCollector, UsageCollector]:
    app = svc.app
    assert app is not None
    args = (app.store.reader, app.stats, lambda: (0, 0))
    return (
        UsageCollector(*args, max_users=max_users, property_keys=()),
        ReferenceCollector(*args, max_users=max_users, property_keys=()),
    )


@pytest.mark.parametrize("fmt", sorted(ACCEPT))
@pytest.mark.parametrize("max_users", [0, 1, 10, 1000])
def test_the_sql_lines_equal_prometheus_client_byte_for_byte(odd: Service, fmt: str, max_users: int) -> None:
    """The whole body, per-user families written by DuckDB, equals prometheus_client's own."""
    encoder, _ = choose_encoder(ACCEPT[fmt])
    ours, reference = collectors(odd, max_users)
    body = ours.gather().encode(encoder)
    assert body == reference.gather().encode(encoder)
    exposed = min(max_users, len(ODD_IDS) + 300)
    assert body.count(b"\nllm_user_cost_usd_total{") == exposed
    assert samples(body.decode(), "user_metrics_users_left_out") == {(): len(ODD_IDS) + 300 - exposed}


def test_the_sql_number_text_is_float_to_go_string() -> None:
    """go_float spells every double, go_int every BIGINT, as floatToGoString does: around each
    exponent switch, timestamps, random bit patterns, tiny and huge values, infinities, NaN,
    integers beyond 2**53 (where float(n) is not n) and negative ones."""
    rng = random.Random(17)
    doubles = [0.0, -0.0, 1.0, math.inf, -math.inf, math.nan, 5e-324, 1.7976931348623157e308, 0.1 + 0.2]
    ints = [
        0,
        1,
        -1,
        999_999,
        1_000_000,
        2**53 - 1,
        2**53,
        2**53 + 1,
        -(2**53),
        -(2**53) - 1,
        2**63 - 1,
        -(2**63),
    ]
    for digits in range(1, 19):
        doubles += [10.0 ** (digits - 1), 10.0**digits - 1, 1.5 * 10 ** (digits - 1), -(10.0**digits)]
        ints += [10 ** (digits - 1), 10**digits - 1, 15 * 10 ** (digits - 1) // 10, -(10**digits)]
    ints += [rng.randint(-(2**63), 2**63 - 1) >> rng.randint(0, 63) for _ in range(5000)]
    doubles += [rng.randint(1_600_000_000_000_000, 1_900_000_000_000_000) / 1e6 for _ in range(5000)]
    doubles += [struct.unpack("d", struct.pack("Q", rng.getrandbits(64)))[0] for _ in range(5000)]
    doubles += [rng.random() * 10 ** rng.randint(-9, 20) for _ in range(5000)]
    floats = pa.table({"v": pa.array(doubles, pa.float64())})  # noqa: F841 - DuckDB reads it
    integers = pa.table({"n": pa.array(ints, pa.int64())})  # noqa: F841 - DuckDB reads it
    text, point = "CAST(v AS VARCHAR)", "strpos(CAST(v AS VARCHAR), '.')"
    as_float = duckdb.sql(f"SELECT {go_float('v', text, point)} FROM floats")
    assert [text for (text,) in as_float.fetchall()] == [floatToGoString(v) for v in doubles]
    as_int = duckdb.sql(f"SELECT {go_int('n', 'CAST(n AS VARCHAR)')} FROM integers")
    assert [text for (text,) in as_int.fetchall()] == [floatToGoString(float(n)) for n in ints]


@needs_promtool
def test_promtool_accepts_the_odd_ids(odd: Service) -> None:
    """promtool check metrics finds nothing wrong with the text format holding every odd id."""
    _, text = scrape(odd)
    assert promtool_check(text) == (0, "", "")
    parsed = {dict(k)["user_id"] for k in samples(text, "llm_user_last_active_timestamp_seconds")}
    assert set(ODD_IDS) <= parsed


@needs_prometheus
def test_a_real_prometheus_reads_every_odd_id_back(odd: Service, tmp_path: Path) -> None:
    """Prometheus (which asks for OpenMetrics) stores each odd id exactly, with its request count."""
    with prometheus_scraping(odd, tmp_path, "odd") as base:
        result = _wait_for(
            base, 'sum by (user_id) (llm_user_requests_total{job="odd"})', lambda r: len(r) > 300
        )
    got = {series["metric"]["user_id"]: float(series["value"][1]) for series in result}  # type: ignore[index]
    assert {user: got.get(user) for user in ODD_IDS} == dict.fromkeys(ODD_IDS, 1.0)
    assert len(got) == len(ODD_IDS) + 300
