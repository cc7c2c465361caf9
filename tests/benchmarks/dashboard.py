"""Dashboard benchmark: how long each page takes to show its data in a real browser.

    python tests/benchmarks/dashboard.py --db /tmp/bench/queries.duckdb [--runs 3]
    python tests/benchmarks/dashboard.py --url http://127.0.0.1:9464 [--token TOKEN]

With ``--db`` it serves that file itself (``user-metrics serve`` on free loopback ports; a file
from ``queries.py`` holds 10M requests of 100,000 users), with ``--url`` it uses a running
server. For each page it loads the page in Debian's chromium (headless, Playwright) and times
from navigation to ``body[data-state=ready]`` (the page's data drawn), and for the users page
also to ``#anomalies[data-state=ready]`` (that panel fills in on its own). Best and median of
RUNS, after one warm-up load, then the server-side duration of every API call the last load made
(the browser's resource timing). Bounded: a fixed number of loads, each with a 120 s timeout.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from playwright.sync_api import Page, sync_playwright

CHROMIUM = "/usr/bin/chromium"


def serve(db: str) -> tuple[subprocess.Popen[str], str]:
    """``user-metrics serve`` on the file, on free ports; returns the process and the API URL."""
    command = [sys.executable, "-m", "user_metrics", "serve", "--db", db, "--log-level", "info"]
    for flag in ("--grpc-listen", "--http-listen", "--api-listen"):
        command += [flag, "127.0.0.1:0"]
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    deadline = time.monotonic() + 600  # a file from an older schema is upgraded first
    for line in proc.stderr:
        if "HTTP API on " in line:
            return proc, line.split("HTTP API on ")[1].split(";")[0].strip()
        if time.monotonic() > deadline:
            break
    proc.kill()
    raise SystemExit(f"the server did not start: {proc.communicate()[1]}")


def get(url: str, token: str | None) -> Any:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    with urllib.request.urlopen(request, timeout=120) as answer:
        return json.load(answer)


def timed(page: Page, url: str, selector: str, runs: int) -> list[float]:
    page.goto(url)
    page.wait_for_selector(selector, timeout=120_000)  # warm-up
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        page.goto(url)
        page.wait_for_selector(selector, timeout=120_000)
        times.append(time.perf_counter() - started)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--db", help="serve this DuckDB file for the benchmark")
    where.add_argument("--url", help="a running server's HTTP API, e.g. http://127.0.0.1:9464")
    parser.add_argument("--token", help="a read token, if the server wants one")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    if not Path(CHROMIUM).exists():
        raise SystemExit(f"{CHROMIUM} is missing: apt-get install chromium")
    proc = None
    if args.db:
        proc, url = serve(args.db)
    else:
        url = args.url.rstrip("/")
    try:
        top = get(f"{url}/api/v1/users?limit=1", args.token)["users"][0]["user_id"]
        keys = get(f"{url}/api/v1/properties", args.token)["keys"]
        key = "plan" if "plan" in keys else (keys[0] if keys else None)
        value = None
        if key:
            values = get(f"{url}/api/v1/properties/{key}", args.token)["values"]
            value = next((v["value"] for v in values if v["value"] is not None), None)
        pages = [
            ("users: table drawn", "/", "body[data-state=ready]"),
            ("users: anomalies panel", "/", "#anomalies[data-state=ready]"),
            ("users, 7 days", "/?window=7d", "body[data-state=ready]"),
            ("users, search", f"/?q={top[: max(3, len(top) // 2)]}", "body[data-state=ready]"),
            ("users by p95 latency", "/?sort=-p95_latency_ms", "body[data-state=ready]"),
            ("one user", f"/users/{urllib.request.quote(top, safe='')}", "body[data-state=ready]"),
        ]
        if key:
            pages.append(("properties", f"/properties?key={key}", "body[data-state=ready]"))
        if key and value is not None:
            query = urllib.request.quote(f"{key}={value}", safe="")
            pages.append((f"users, {key}={value}", f"/?property={query}", "body[data-state=ready]"))
        print(f"server {url}; top user {top!r}; {args.runs} loads after a warm-up; navigation to data drawn")
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1300, "height": 900})
            if args.token:
                page.goto(f"{url}/healthz")
                page.evaluate("t => sessionStorage.setItem('user-metrics-read-token', t)", args.token)
            for name, path, selector in pages:
                times = timed(page, url + path, selector, args.runs)
                calls = page.evaluate(
                    "performance.getEntriesByType('resource').filter(e => e.name.includes('/api/'))"
                    ".map(e => [new URL(e.name).pathname, Math.round(e.duration)])"
                )
                api = ", ".join(f"{p.removeprefix('/api/v1/')} {ms} ms" for p, ms in calls)
                print(
                    f"{name:28s} best {min(times) * 1000:6.0f} ms  median {statistics.median(times) * 1000:6.0f} ms"
                    f"   [{api}]"
                )
            browser.close()
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=60)


if __name__ == "__main__":
    main()
