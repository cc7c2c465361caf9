"""OTLP/HTTP recorder: saves every POSTed ExportTraceServiceRequest body byte for byte.

Usage: recorder.py PORT OUT_DIR   (writes OUT_DIR/traces-NNNN.pb, or .json if the body was JSON)
"""

import gzip
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

LOCK = threading.Lock()
N = [0]


class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def do_POST(self):  # noqa: N802
        if "chunked" in (self.headers.get("transfer-encoding") or "").lower():
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                parts.append(self.rfile.read(size))
                self.rfile.readline()
            body = b"".join(parts)
        else:
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
        if self.headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        ctype = self.headers.get("content-type", "")
        with LOCK:
            N[0] += 1
            n = N[0]
        ext = "json" if "json" in ctype else "pb"
        (OUT / f"traces-{n:04d}.{ext}").write_bytes(body)
        with open(OUT / "requests.log", "a") as f:
            f.write(f"{n} {self.path} {ctype} {len(body)} auth={'authorization' in self.headers}\n")
        resp = b"{}" if ext == "json" else b""
        self.send_response(200)
        self.send_header("content-type", ctype or "application/x-protobuf")
        self.send_header("content-length", str(len(resp)))
        self.end_headers()
        self.wfile.write(resp)


if __name__ == "__main__":
    OUT = Path(sys.argv[2])
    OUT.mkdir(parents=True, exist_ok=True)
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
