"""Fake OpenAI-compatible server for capture runs (chat completions, streams, embeddings, 500, 429).

Token counts are a deterministic function of the prompt text; every response carries a full usage
block incl. prompt_tokens_details.cached_tokens and completion_tokens_details.reasoning_tokens.
Response model names are dated snapshots. One ground-truth JSON line per HTTP request.
Usage: fake_openai_server.py PORT GROUND_TRUTH_PATH
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
import struct
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DATED = {
    "gpt-4o-mini": "gpt-4o-mini-2024-07-18",
    "gpt-4o": "gpt-4o-2024-08-06",
    "text-embedding-3-small": "text-embedding-3-small",
}
LOCK = threading.Lock()
SEQ = [0]
LOG_PATH = ""


def _text_of(content) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def prompt_tokens_for(messages) -> int:
    return 3 + sum(4 + math.ceil(len(_text_of(m.get("content"))) / 4) for m in messages)


def completion_tokens_for(text: str) -> int:
    return 20 + int(hashlib.sha256(text.encode()).hexdigest(), 16) % 50


def log(entry: dict) -> None:
    with LOCK, open(LOG_PATH, "a") as f:
        f.write(json.dumps(entry, sort_keys=True) + "\n")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # quiet
        pass

    def _send_json(self, status: int, obj: dict) -> None:
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        if status == 429:
            self.send_header("retry-after-ms", "20")
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):  # noqa: N802
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length)
        req = json.loads(raw or b"{}")
        with LOCK:
            SEQ[0] += 1
            seq = SEQ[0]
        m = re.search(r"\[call (\d+)\]", raw.decode("utf-8", "replace"))
        tag = m.group(1) if m else None
        model = req.get("model")
        base = {
            "seq": seq,
            "ts": time.time(),
            "path": self.path,
            "call_tag": tag,
            "model": model,
            "user": req.get("user"),
            "stream": bool(req.get("stream")),
            "include_usage": bool((req.get("stream_options") or {}).get("include_usage")),
            "traceparent": self.headers.get("traceparent"),
            "baggage": self.headers.get("baggage"),
        }
        text = raw.decode("utf-8", "replace")
        if "TRIGGER_500" in text or "TRIGGER_429" in text:
            status, etype, msg = (
                (500, "server_error", "The server had an error while processing your request.")
                if "TRIGGER_500" in text
                else (
                    429,
                    "rate_limit_exceeded",
                    "Rate limit reached for requests. Please try again in 20ms.",
                )
            )
            log(
                {
                    **base,
                    "status": status,
                    "error_type": etype,
                    "prompt_tokens": None,
                    "completion_tokens": None,
                    "cached_tokens": None,
                    "reasoning_tokens": None,
                    "total_tokens": None,
                }
            )
            return self._send_json(
                status, {"error": {"message": msg, "type": etype, "param": None, "code": etype}}
            )
        if self.path.rstrip("/").endswith("/embeddings"):
            return self._embeddings(req, base)
        if self.path.rstrip("/").endswith("/chat/completions"):
            return self._chat(req, base, seq)
        log({**base, "status": 404})
        return self._send_json(
            404, {"error": {"message": f"unknown path {self.path}", "type": "invalid_request_error"}}
        )

    def _embeddings(self, req, base):
        inp = req.get("input")
        inputs = inp if isinstance(inp, list) else [inp]
        pt = sum(len(str(i)) // 4 + 2 for i in inputs)
        model = req.get("model")
        data = []
        for i, s in enumerate(inputs):
            h = hashlib.sha256(str(s).encode()).digest()
            vec = [((b / 255.0) * 2 - 1) for b in h[:8]]
            if req.get("encoding_format") == "base64":
                emb = base64.b64encode(struct.pack("<8f", *vec)).decode()
            else:
                emb = vec
            data.append({"object": "embedding", "index": i, "embedding": emb})
        log(
            {
                **base,
                "status": 200,
                "prompt_tokens": pt,
                "completion_tokens": None,
                "cached_tokens": None,
                "reasoning_tokens": None,
                "total_tokens": pt,
                "response_model": DATED.get(model, model),
                "usage_reported": True,
            }
        )
        return self._send_json(
            200,
            {
                "object": "list",
                "data": data,
                "model": DATED.get(model, model),
                "usage": {"prompt_tokens": pt, "total_tokens": pt},
            },
        )

    def _chat(self, req, base, seq):
        messages = req.get("messages") or []
        pt = prompt_tokens_for(messages)
        prompt_text = "\n".join(_text_of(m.get("content")) for m in messages)
        ct = completion_tokens_for(prompt_text)
        cached, reasoning = pt // 3, ct // 4
        model = req.get("model")
        rmodel = DATED.get(model, model)
        rid = f"chatcmpl-fake{seq:04d}"
        tag = base["call_tag"] or "?"
        answer = f"[reply {tag}] This is a deterministic fake answer from the capture server for testing"
        usage = {
            "prompt_tokens": pt,
            "completion_tokens": ct,
            "total_tokens": pt + ct,
            "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": reasoning,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }
        created = 1767225600
        entry = {
            **base,
            "status": 200,
            "prompt_tokens": pt,
            "completion_tokens": ct,
            "cached_tokens": cached,
            "reasoning_tokens": reasoning,
            "total_tokens": pt + ct,
            "response_model": rmodel,
            "response_id": rid,
            "finish_reason": "stop",
        }
        if not base["stream"]:
            entry["usage_reported"] = True
            log(entry)
            return self._send_json(
                200,
                {
                    "id": rid,
                    "object": "chat.completion",
                    "created": created,
                    "model": rmodel,
                    "system_fingerprint": f"fp_fake{seq:04d}",
                    "service_tier": "default",
                    "choices": [
                        {
                            "index": 0,
                            "finish_reason": "stop",
                            "logprobs": None,
                            "message": {"role": "assistant", "content": answer, "refusal": None},
                        }
                    ],
                    "usage": usage,
                },
            )
        entry["usage_reported"] = base["include_usage"]
        log(entry)
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()

        def chunk(obj):
            data = f"data: {obj if isinstance(obj, str) else json.dumps(obj)}\n\n".encode()
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

        common = {
            "id": rid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": rmodel,
            "system_fingerprint": f"fp_fake{seq:04d}",
        }
        words = answer.split(" ")[:8]
        first = True
        for w in words:
            delta = {"content": ("" if first else " ") + w}
            if first:
                delta["role"] = "assistant"
                first = False
            c = {**common, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
            if base["include_usage"]:
                c["usage"] = None
            chunk(c)
        c = {**common, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        if base["include_usage"]:
            c["usage"] = None
        chunk(c)
        if base["include_usage"]:
            chunk({**common, "choices": [], "usage": usage})
        chunk("[DONE]")
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


if __name__ == "__main__":
    port = int(sys.argv[1])
    LOG_PATH = sys.argv[2]
    open(LOG_PATH, "w").close()
    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
