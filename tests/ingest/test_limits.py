"""Configurable limits: what is cut, what is kept, and that every cut is counted on /metrics."""

from __future__ import annotations

from pathlib import Path

from conftest import Service, cuts
from otlp import chat, request, span
from senders import raw_export

from user_metrics.stats import LIMITS


def test_properties_per_request_keep_the_first_by_name(tmp_path: Path) -> None:
    svc = Service(tmp_path / "um.duckdb", max_properties=2, metrics_refresh_seconds=0)
    app = svc.start()
    props = {"property.zeta": "z", "property.alpha": "a", "property.mid": "m", "property.beta": "b"}
    raw_export(svc.target, request([span(chat(user="p", **props))]).SerializeToString())
    raw_export(svc.target, request([span(chat(user="q", **{"property.one": "1"}))]).SerializeToString())
    assert cuts(app.api_url) == dict.fromkeys(LIMITS, 0) | {"max_properties": 2}  # every limit, 0 or not
    rows = {r["user_id"]: r["properties"] for r in svc.rows()}
    assert rows == {"p": {"alpha": "a", "beta": "b"}, "q": {"one": "1"}}


def test_distinct_property_keys_are_capped_across_restarts(tmp_path: Path) -> None:
    svc = Service(tmp_path / "um.duckdb", max_property_keys=3, metrics_refresh_seconds=0)
    svc.start()

    def send(user: str, **props: str) -> None:
        attrs = {f"property.{k}": v for k, v in props.items()}
        raw_export(svc.target, request([span(chat(user=user, **attrs))]).SerializeToString())

    send("u1", a="1", b="1")
    send("u2", c="1", d="1")  # c is the third key; d would be a fourth
    send("u3", a="2", d="2")
    assert svc.app is not None and cuts(svc.app.api_url)["max_property_keys"] == 2
    app = svc.restart()  # the keys already stored are read back from the database
    send("u4", c="3", e="3")
    assert cuts(app.api_url)["max_property_keys"] == 1
    rows = {r["user_id"]: r["properties"] for r in svc.rows()}
    assert rows == {"u1": {"a": "1", "b": "1"}, "u2": {"c": "1"}, "u3": {"a": "2"}, "u4": {"c": "3"}}


def test_long_values_are_cut_and_counted(tmp_path: Path) -> None:
    svc = Service(tmp_path / "um.duckdb", max_value_length=8, metrics_refresh_seconds=0)
    app = svc.start()
    raw_export(
        svc.target,
        request(
            [span(chat(user="a-very-long-user-id", **{"property.plan": "enterprise-plus"}))]
        ).SerializeToString(),
    )
    assert cuts(app.api_url)["max_value_length"] == 3  # the user id, the model and the properties
    [row] = svc.rows()
    assert (row["user_id"], row["request_model"], row["properties"]) == (
        "a-very-l",
        "gpt-4o-m",
        {"plan": "enterpri"},
    )
