"""`user-metrics demo`: the demo traffic, sent through the real OTel SDK, is stored exactly as planned;
the command serves it and cleans up after itself."""

from __future__ import annotations

import json
import os
import queue
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.request import urlopen

import pytest
from conftest import Service, spawn

from user_metrics.cli.demo_spans import DemoError, send_demo_spans
from user_metrics.cli.demo_traffic import plan_traffic
from user_metrics.cli.main import main
from user_metrics.errors import InvalidInput
from user_metrics.query.anomalies import anomalies
from user_metrics.query.properties import by_property as query_by_property
from user_metrics.query.totals import totals as query_totals
from user_metrics.query.users import users as query_users

NOW = datetime(2025, 11, 12, 14, 20, tzinfo=UTC)  # a Wednesday afternoon


def test_demo_traffic_is_stored_as_sent(service: Service) -> None:
    """Every user's requests, errors and tokens as planned; priced; spread over the month; one spike."""
    data = send_demo_spans(service.target, seed=1, now=NOW)
    assert service.app is not None
    con = service.app.store.reader()
    try:
        # Traces cut across two exports wait for their root span in `pending`, but only until it
        # arrives, which is well before the attribution window (30 s) ends.
        deadline = time.monotonic() + 10
        while query_totals(con, since=data.since, until=NOW).requests != data.requests:
            assert time.monotonic() < deadline, "the demo's requests were not all stored"
            time.sleep(0.05)
        totals = query_totals(con, since=data.since, until=NOW)
        page = query_users(con, since=data.since, until=NOW, limit=1000)
        plans = query_by_property(con, "plan", since=data.since, until=NOW)
        features = query_by_property(con, "feature", since=data.since, until=NOW)
        found = anomalies(con, now=lambda: NOW)
        (days,) = con.execute(
            "SELECT count(DISTINCT epoch_us(start_time) // 86400000000) FROM requests"
        ).fetchone() or (0,)
        resources = con.execute("SELECT DISTINCT service_name, environment FROM requests").fetchall()
    finally:
        con.close()

    assert data.requests == 3000 and len(data.users) == 36
    assert data.spans > data.requests  # agent, tool, HTTP and workflow spans are not requests
    assert {u.user_id: _sums(u) for u in page.users} == {u.user_id: _sums(u) for u in data.users}
    assert (totals.users, totals.anonymous_requests, totals.requests) == (36, 0, 3000)
    assert (totals.input_tokens, totals.output_tokens) == (data.input_tokens, data.output_tokens)
    assert 0.02 <= data.errors / data.requests <= 0.04

    # Every model is known to genai-prices; failed calls carry no usage and cost nothing.
    assert totals.unpriced_requests == 0 and totals.cost_usd > 0
    assert all(u.unpriced_requests == 0 and u.cost_usd and u.cost_usd > 0 for u in page.users)

    assert {v.value for v in plans.values if v.users > 0} == {"free", "pro", "enterprise"}
    assert {v.value for v in features.values} == {"chat", "search", "summarize", "agent"}
    assert resources == [("support-bot", "demo")]

    # Heavy and light users; a few who only started in the last week.
    requests = sorted(u.requests for u in page.users)
    assert requests[-1] >= 10 * requests[len(requests) // 2]
    assert sum(u.first_active >= NOW - timedelta(days=7) for u in page.users) >= 36 // 8

    assert days >= 28 and data.distinct_days == days

    # The planted user's runaway agent stands out against their own history. With seed 1 at NOW it is
    # the only user flagged. Not a law: in 12 other (seed, now) pairs one run also flagged a heavy
    # user's busy hour (score 6.1 against the threshold of 6), as real traffic can.
    flagged = {(f.user_id, f.metric, f.method) for f in found.findings}
    assert (data.spiking_user, "requests", "own_history") in flagged
    assert (data.spiking_user, "cost_usd", "own_history") in flagged
    assert {user for user, _, _ in flagged} == {data.spiking_user}


def _sums(user: Any) -> tuple[int, ...]:
    return (user.requests, user.errors, user.input_tokens, user.output_tokens, user.cache_read_tokens)


def test_the_same_seed_plans_the_same_traffic() -> None:
    now_ns = int(NOW.timestamp()) * 10**9
    assert plan_traffic(7, 12, 500, 30, now_ns) == plan_traffic(7, 12, 500, 30, now_ns)
    assert plan_traffic(7, 12, 500, 30, now_ns) != plan_traffic(8, 12, 500, 30, now_ns)


def test_failed_export_is_an_error() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(DemoError, match=r"0 of \d+ spans delivered"):
        send_demo_spans(f"127.0.0.1:{port}", users=3, requests=40, timeout=2)


def test_bad_figures_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(InvalidInput, match="requests must be from 56"):
        send_demo_spans("127.0.0.1:1", users=36, requests=50)
    assert main(["demo", "--users", "1"]) == 2
    assert "users must be from 2" in capsys.readouterr().err


def test_demo_command_serves_until_interrupted() -> None:
    """The real command, run as README says after its install (the venv not on PATH): it prints the
    dashboard URL and commands that work as printed, serves the API, and SIGINT stops it cleanly."""
    script = Path(sys.executable).parent / "user-metrics"
    home = script.parent.parent.parent  # where README's `python3 -m venv .venv` ran
    typed = str(script.relative_to(home))  # .venv/bin/user-metrics
    path = [p for p in os.environ["PATH"].split(os.pathsep) if Path(p).resolve() != script.parent.resolve()]
    env = {**os.environ, "PATH": os.pathsep.join(path)}
    proc = spawn(
        [typed, "demo", "--requests", "600", "--seed", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=home,
        env=env,
    )
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    try:
        printed = []
        url = None
        deadline = time.monotonic() + 60
        while url is None:
            line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            assert line is not None, f"the demo exited: {''.join(printed)}{proc.communicate()[1]}"
            printed.append(line)
            match = re.fullmatch(r"Dashboard:\s+(http://127\.0\.0\.1:\d+/)\n", line)
            url = match.group(1) if match else None
        db_line = re.search(r"^Database: (\S+) \(temporary", "".join(printed), re.MULTILINE)
        assert db_line, "".join(printed)
        workdir = Path(db_line.group(1)).parent
        assert workdir.is_dir()

        with urlopen(f"{url}healthz", timeout=10) as answer:
            assert json.load(answer)["status"] == "ok"
        with urlopen(f"{url}api/v1/users?since=31d&limit=100", timeout=10) as answer:
            users = json.load(answer)
        assert users["total"] == 36 and len(users["users"]) == 36
        assert sum(u["requests"] for u in users["users"]) == 600

        # Every suggested command runs, as printed, in the shell that started the demo.
        text = "".join(printed)
        while not text.endswith("Serving until Ctrl-C.\n"):
            line = lines.get(timeout=30)
            assert line is not None, text
            text += line
        hints = text.split("Try:\n")[1].split("\n\n")[0].splitlines()
        commands = [shlex.split(h) for h in hints if not h.lstrip().startswith("curl")]
        assert len(commands) == 6 and all(c[0] == typed for c in commands), hints
        for command in commands:
            done = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=home, env=env)
            assert done.returncode == 0 and done.stdout, (command, done.stderr)

        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0, proc.communicate()[1]
        assert not workdir.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
