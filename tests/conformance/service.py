"""A real `user-metrics serve` on free ports with a temporary database, and a recording OTLP/HTTP
proxy in front of it that keeps every Export request (as protobuf bytes) before forwarding it.

The proxy accepts any path ending in ``/v1/traces`` (Langfuse posts to
``/api/public/otel/v1/traces``, the OTel SDK to ``/v1/traces``), protobuf or JSON, gzip or not.
"""

from __future__ import annotations

import gzip
import http.client
import os
import re
import signal
import subprocess
import sys
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import duckdb

from user_metrics.ingest.ingestor import decode_json

SRC = Path(__file__).resolve().parents[2] / "src"
LISTENING = re.compile(
    r"OTLP gRPC and queries on (\S+); OTLP/HTTP on (\S+); HTTP API on (\S+); database (\S+)"
)


class Service:
    """`user-metrics serve --db <tmp>` on free ports; ``otlp_http`` is its OTLP/HTTP base URL."""

    def __init__(self, db: Path, extra: list[str], log: Path) -> None:
        self.db = db
        self.log_path = log
        env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
        cmd = [
            sys.executable,
            "-m",
            "user_metrics",
            "serve",
            "--db",
            str(db),
            "--grpc-listen",
            "127.0.0.1:0",
            "--api-listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
            *extra,
        ]
        self.proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=env)
        self._lines: list[str] = []
        deadline = time.monotonic() + 120
        assert self.proc.stderr is not None
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                break
            self._lines.append(line)
            match = LISTENING.search(line)
            if match:
                self.otlp_http, self.api = match.group(2), match.group(3)
                threading.Thread(target=self._drain, daemon=True).start()
                return
        self.proc.kill()
        raise RuntimeError("user-metrics serve did not start:\n" + "".join(self._lines))

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._lines.append(line)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log_path.write_text("".join(self._lines))

    def requests(self) -> list[dict[str, Any]]:
        """Every stored row of ``requests`` (the service must be stopped), and the rows still pending."""
        con = duckdb.connect(str(self.db), read_only=True)
        try:
            out = []
            for table in ("requests", "pending"):
                cur = con.execute(f"SELECT * FROM {table} ORDER BY start_time, span_id")
                names = [d[0] for d in cur.description]
                out += [dict(zip(names, row, strict=True), _table=table) for row in cur.fetchall()]
            return out
        finally:
            con.close()


class RecordingProxy:
    """OTLP/HTTP in, OTLP/HTTP out to ``target``; ``bodies`` holds each request as protobuf bytes."""

    def __init__(self, target: str) -> None:
        self.target = urlsplit(target)
        self.bodies: list[bytes] = []
        self.answers: list[int] = []
        self._lock = threading.Lock()
        handler = type("Proxy", (_ProxyHandler,), {"proxy": self})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class _ProxyHandler(BaseHTTPRequestHandler):
    proxy: RecordingProxy

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = self._body()
        encoding = (self.headers.get("content-encoding") or "").lower()
        if encoding == "gzip":
            body = gzip.decompress(body)
        elif encoding == "deflate":
            body = zlib.decompress(body)
        ctype = (self.headers.get("content-type") or "application/x-protobuf").split(";")[0].strip()
        if not self.path.split("?")[0].endswith("/v1/traces"):
            return self._answer(200, b"", ctype)  # metrics and logs: accepted, not kept
        raw = decode_json(body).SerializeToString() if ctype == "application/json" else bytes(body)
        conn = http.client.HTTPConnection(str(self.proxy.target.hostname), self.proxy.target.port, timeout=60)
        try:
            conn.request("POST", "/v1/traces", body, {"content-type": ctype})
            response = conn.getresponse()
            status, data, rtype = (
                response.status,
                response.read(),
                response.getheader("content-type") or ctype,
            )
        finally:
            conn.close()
        with self.proxy._lock:
            self.proxy.bodies.append(raw)
            self.proxy.answers.append(status)
        self._answer(status, data, rtype)

    def _body(self) -> bytes:
        """The request body, sized or chunked (Node's OTLP exporter sends no Content-Length)."""
        if "chunked" not in (self.headers.get("transfer-encoding") or "").lower():
            return self.rfile.read(int(self.headers.get("content-length") or 0))
        parts = []
        while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
            parts.append(self.rfile.read(size))
            self.rfile.readline()  # the CRLF after the chunk
        while self.rfile.readline().strip():  # trailers up to the blank line
            pass
        return b"".join(parts)

    def _answer(self, status: int, data: bytes, ctype: str) -> None:
        self.send_response(status)
        self.send_header("content-type", ctype)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
