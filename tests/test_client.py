"""The Python clients (``user_metrics.connect``), on the file and through a running server.

Both answer a question that names nothing (an empty user id or property key) with the same
InvalidInput, instead of reading it as another question.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Service
from otlp import chat, span
from otlp import request as export_request
from query_service import WINDOWS

import user_metrics
from user_metrics import connect
from user_metrics.client import RemoteClient
from user_metrics.errors import InvalidInput
from user_metrics.serve.local_client import LocalClient

Client = LocalClient | RemoteClient


def _filled(db: Path) -> Service:
    svc = Service(db)
    app = svc.start()
    app.ingestor.export(export_request([span(chat(user="alice", **{"property.plan": "pro"}))]))
    return svc


@pytest.fixture(scope="module", params=["local", "remote"])
def client(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    """A client of each kind on a store holding one request of alice's."""
    svc = _filled(tmp_path_factory.mktemp("client") / "um.duckdb")
    if request.param == "local":
        svc.stop()  # the server holds the file while it runs
        with connect(path=svc.db) as local:
            yield local
        return
    assert svc.app is not None
    try:
        with connect(url=svc.app.api_url) as remote:
            yield remote
    finally:
        svc.stop()


def test_the_client_reads_the_store(client: Client) -> None:
    """(The fixture is sound: each client sees alice's request.)"""
    assert client.user("alice", since="3000d").requests == 1


@pytest.mark.parametrize(
    ("ask", "named"),
    [
        (lambda c: c.user(""), "user_id"),
        (lambda c: c.recent_requests(""), "user_id"),
        (lambda c: c.timeseries(""), "user_id"),
        (lambda c: c.by_property(""), "key"),
    ],
    ids=["user", "recent_requests", "timeseries", "by_property"],
)
def test_an_empty_id_or_key_is_invalid_input(
    client: Client, ask: Callable[[Client], Any], named: str
) -> None:
    """An empty user id (never stored: it counts as none) or property key is InvalidInput naming it."""
    with pytest.raises(InvalidInput, match=f"^{named}: "):
        ask(client)


@pytest.mark.parametrize("offset", [-1, 2**63, 10**23])
def test_an_offset_out_of_range_is_invalid_input(client: Client, offset: int) -> None:
    """offset runs from 0 to 2**63 - 1 (DuckDB's BIGINT), on either side of the wire."""
    with pytest.raises(InvalidInput, match="^offset: "):
        client.users(offset=offset)
    assert client.users(since="3000d", offset=2**63 - 1).users == ()


class TestClients:
    def test_the_file_and_the_server_answer_identically(self, served: Service) -> None:
        """connect(url=...) while serving equals connect(path=...) once the server is stopped."""
        assert served.app is not None
        since, until = WINDOWS["ragged both ends"]
        calls = [
            ("users", (since, until), {"sort": "-requests", "properties": {"plan": "pro"}}),
            ("user", ("zoë 🙂", since, until), {}),
            ("timeseries", ("a/b?c=d&e#f", since, until), {"bucket": "hour"}),
            ("timeseries", (None, since, until), {}),
            ("by_property", ("plan", since, until), {}),
            ("totals", (since, until), {"model": "gpt-4o-mini"}),
            ("users", (since, until), {"search": "B", "sort": "user_id"}),
            ("recent_requests", ("o'brien", since, until), {"limit": 5, "properties": ["plan=pro"]}),
            ("property_keys", (), {}),
        ]
        with user_metrics.connect(url=served.app.api_url) as remote:
            answers = [getattr(remote, name)(*args, **kwargs) for name, args, kwargs in calls]
            sql = remote.sql("SELECT user_id, sum(cost_usd) FROM requests GROUP BY 1 ORDER BY 1")
        served.stop()
        try:
            with user_metrics.connect(path=served.db) as local:
                assert [getattr(local, name)(*args, **kwargs) for name, args, kwargs in calls] == answers
                assert local.sql("SELECT user_id, sum(cost_usd) FROM requests GROUP BY 1 ORDER BY 1") == sql
        finally:
            served.start()

    @pytest.mark.parametrize("name", ["user", "recent_requests"])
    def test_the_server_client_refuses_the_anonymous_user_by_name(self, served: Service, name: str) -> None:
        """The HTTP API has no address for "no user id": a clear InvalidInput, before any request."""
        assert served.app is not None
        with (
            user_metrics.connect(url=served.app.api_url) as remote,
            pytest.raises(InvalidInput, match="by id"),
        ):
            getattr(remote, name)(None)
