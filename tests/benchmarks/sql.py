"""SQL bounds benchmark: how long the issue's runaway statements take to answer, and the server's memory.

    python tests/benchmarks/sql.py [--timeout 120] [--only NAME]

For each statement it starts ``user-metrics serve`` on a fresh database in a temporary folder
(free loopback ports, the default settings: ``sql_timeout_seconds`` 10, ``memory_limit_mib``
1024), posts the statement to ``/api/v1/sql`` once, and prints the answer's status, the seconds
until it came, and the server process's resident memory: its peak (``VmHWM``) and what it holds
afterwards (``VmRSS``), from ``/proc``. A fresh server per statement keeps the peaks apart.
Bounded: one request per statement with a client timeout (``--timeout``), and the server is
killed at the end whatever happened. To compare with another build, run it with that build's
``src`` first on ``PYTHONPATH``.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import duckdb

import user_metrics

STATEMENTS = {
    "select-1": "SELECT 1",
    "union-10000": " UNION ALL ".join(f"SELECT {i} AS x" for i in range(10_000)),
    "join-200": "SELECT count(*) FROM range(10) t0 "
    + " ".join(f"JOIN range(10) t{i} ON t{i}.range = t{i - 1}.range" for i in range(1, 200)),
    "repeat-10MB-x150": "SELECT repeat('x', 10000000) FROM range(150)",
    "rows-10KB-x2000": "SELECT range, repeat('x', 10000) FROM range(2000)",
}


def serve(folder: str) -> tuple[subprocess.Popen[str], str]:
    """``user-metrics serve`` on a new file in ``folder``; returns the process and the API URL."""
    command = [sys.executable, "-m", "user_metrics", "serve", "--db", f"{folder}/bench.duckdb"]
    for flag in ("--grpc-listen", "--http-listen", "--api-listen"):
        command += [flag, "127.0.0.1:0"]
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    for line in proc.stderr:
        if "HTTP API on " in line:
            return proc, line.split("HTTP API on ")[1].split(";")[0].strip()
    proc.kill()
    raise SystemExit(f"the server did not start: {proc.communicate()[1]}")


def memory_mib(pid: int) -> tuple[int, int]:
    """(peak, current) resident memory of a process, in MiB."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line
    )
    return int(fields["VmHWM"].split()[0]) // 1024, int(fields["VmRSS"].split()[0]) // 1024


def post(url: str, sql: str, timeout: float) -> tuple[str, int]:
    """(status and the start of the error or the row count, response bytes)."""
    request = urllib.request.Request(
        f"{url}/api/v1/sql",
        json.dumps({"sql": sql, "limit": 10_000}).encode(),
        {"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            data = answer.read()
            body = json.loads(data)
            return f"200 {len(body['rows'])} rows, truncated {body['truncated']}", len(data)
    except urllib.error.HTTPError as exc:
        data = exc.read()
        return f"{exc.code} {json.loads(data)['error'][:70]}", len(data)
    except TimeoutError:
        return "no answer (client timeout)", 0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--timeout", type=float, default=120.0, help="client timeout per statement")
    parser.add_argument("--only", choices=sorted(STATEMENTS), action="append")
    args = parser.parse_args()
    print(
        f"# sql bounds: {platform.node()}, {platform.processor() or platform.machine()}, "
        f"DuckDB {duckdb.__version__}, user_metrics from {Path(user_metrics.__file__).parent}"
    )
    print(f"{'statement':18} {'seconds':>8} {'peak MiB':>9} {'after MiB':>9} {'bytes':>9}  answer")
    for name in args.only or STATEMENTS:
        with tempfile.TemporaryDirectory() as folder:
            proc, url = serve(folder)
            try:
                started = time.perf_counter()
                answer, size = post(url, STATEMENTS[name], args.timeout)
                seconds = time.perf_counter() - started
                peak, now = memory_mib(proc.pid)
                print(f"{name:18} {seconds:8.2f} {peak:9} {now:9} {size:9}  {answer}", flush=True)
            finally:
                proc.kill()
                proc.wait()


if __name__ == "__main__":
    main()
