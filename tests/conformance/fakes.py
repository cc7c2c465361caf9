"""Fake LLM providers on 127.0.0.1: an OpenAI-compatible (Chat Completions, Responses,
embeddings) and an Anthropic-compatible API in one HTTP server, answering deterministically per
prompt with full usage (cached, cache-write and reasoning tokens), and logging the ground truth of
every request it served.

A prompt names its call with ``[call N]``; ``[fail 500]`` / ``[fail 429]`` in it make the server
answer that error. Token counts are a function of the prompt text only, so every library sees the
same numbers for the same call.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

RESPONSE_MODELS = {
    "gpt-4o-mini": "gpt-4o-mini-2024-07-18",
    "gpt-4o": "gpt-4o-2024-08-06",
    "text-embedding-3-small": "text-embedding-3-small",
    "claude-3-5-haiku-latest": "claude-3-5-haiku-20241022",
    "claude-sonnet-4-0": "claude-sonnet-4-20250514",
}
CALL_TAG = re.compile(r"\[call (\d+)\]")
FAIL_TAG = re.compile(r"\[fail (\d{3})\]")
REPLY = "This is a deterministic fake answer from the conformance server ."


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


def usage_for(text: str, provider: str) -> dict[str, int | None]:
    """Token counts of a prompt (all its text): total input, cache read/write, output, reasoning."""
    d = _digest(text)
    prompt = 30 + len(text) // 8 + d[0] % 20
    cached = prompt // 3
    completion = 20 + d[1] % 50
    if provider == "anthropic":  # no separate reasoning count; cache writes exist
        return {
            "prompt": prompt,
            "cached": cached,
            "cache_write": prompt // 10,
            "completion": completion,
            "reasoning": None,
        }
    return {
        "prompt": prompt,
        "cached": cached,
        "cache_write": None,
        "completion": completion,
        "reasoning": completion // 4,
    }


def _texts(value: Any) -> list[str]:
    """Every string inside a request body value (messages, content blocks, input lists)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [t for v in value for t in _texts(v)]
    if isinstance(value, dict):
        return [t for k, v in value.items() if k in ("content", "text", "system") for t in _texts(v)]
    return []


class FakeProviders:
    """The server. ``truth`` holds one dict per request served, in order."""

    def __init__(self) -> None:
        self.truth: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        handler = type("Handler", (_Handler,), {"fakes": self})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def openai_base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def anthropic_base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FakeProviders:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def log(self, row: dict[str, Any]) -> None:
        with self._lock:
            row["seq"] = len(self.truth) + 1
            self.truth.append(row)


class _Handler(BaseHTTPRequestHandler):
    fakes: FakeProviders

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("content-length") or 0)) or b"{}")
        path = self.path.split("?")[0]
        provider = "anthropic" if path.endswith("/messages") else "openai"
        responses = path.endswith("/responses")  # OpenAI's Responses API: usage in every answer
        if path.endswith("/embeddings"):
            text = " ".join(_texts(body.get("input")))
        elif responses:
            text = " ".join(_texts(body.get("instructions")) + _texts(body.get("input")))
        else:
            text = " ".join(_texts(body.get("messages")) + _texts(body.get("system")))
        call = CALL_TAG.search(text)
        fail = FAIL_TAG.search(text)
        model = body.get("model", "")
        stream = bool(body.get("stream"))
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        user = body.get("user") or (body.get("metadata") or {}).get("user_id")
        n = int(call.group(1)) if call else None
        row: dict[str, Any] = {
            "ts": time.time(),
            "path": path,
            "provider": provider,
            "call": n,
            "model": model,
            "stream": stream,
            "include_usage": include_usage,
            "user": user,
            "traceparent": self.headers.get("traceparent"),
        }
        if fail:
            status = int(fail.group(1))
            row.update(status=status, usage_reported=False)
            self.fakes.log(row)
            return self._error(status, provider)
        usage = usage_for(text, provider)
        embed = path.endswith("/embeddings")
        row.update(
            status=200,
            response_model=RESPONSE_MODELS.get(model, model),
            response_id=(
                f"msg_fake{n or 0:04d}"
                if provider == "anthropic"
                else f"resp_fake{n or 0:04d}"
                if responses
                else f"chatcmpl-fake{n or 0:04d}"
            ),
            prompt_tokens=usage["prompt"],
            cached_tokens=None if embed else usage["cached"],
            cache_write_tokens=None if embed else usage["cache_write"],
            completion_tokens=None if embed else usage["completion"],
            reasoning_tokens=None if embed else usage["reasoning"],
            # A stream without include_usage never tells the client its usage (OpenAI only).
            usage_reported=responses or not (provider == "openai" and stream and not include_usage),
        )
        self.fakes.log(row)
        reply = f"[reply {n}] " + REPLY
        if embed:
            self._embeddings(body, row)
        elif responses:
            self._responses(row, reply, stream)
        elif provider == "anthropic":
            self._anthropic(row, reply, stream)
        else:
            self._openai(row, reply, stream, include_usage)

    # --- answers -------------------------------------------------------------------------------

    def _json(self, status: int, obj: Any) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        if status == 429:
            self.send_header("retry-after", "0")
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, provider: str) -> None:
        if provider == "anthropic":
            kind = "rate_limit_error" if status == 429 else "api_error"
            return self._json(status, {"type": "error", "error": {"type": kind, "message": f"fake {status}"}})
        kind = "rate_limit_exceeded" if status == 429 else "server_error"
        self._json(
            status, {"error": {"message": f"fake {status}", "type": kind, "param": None, "code": kind}}
        )

    def _sse(self, events: list[tuple[str | None, Any]]) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("connection", "close")
        self.end_headers()
        for name, data in events:
            head = f"event: {name}\n" if name else ""
            self.wfile.write(
                f"{head}data: {data if isinstance(data, str) else json.dumps(data)}\n\n".encode()
            )
            self.wfile.flush()
        self.close_connection = True

    def _openai_usage(self, row: dict[str, Any]) -> dict[str, Any]:
        return {
            "prompt_tokens": row["prompt_tokens"],
            "completion_tokens": row["completion_tokens"],
            "total_tokens": row["prompt_tokens"] + row["completion_tokens"],
            "prompt_tokens_details": {"cached_tokens": row["cached_tokens"], "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": row["reasoning_tokens"],
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }

    def _openai(self, row: dict[str, Any], reply: str, stream: bool, include_usage: bool) -> None:
        base = {
            "id": row["response_id"],
            "created": int(row["ts"]),
            "model": row["response_model"],
            "system_fingerprint": "fp_fake",
        }
        if not stream:
            return self._json(
                200,
                {
                    **base,
                    "object": "chat.completion",
                    "choices": [
                        {
                            "index": 0,
                            "finish_reason": "stop",
                            "logprobs": None,
                            "message": {"role": "assistant", "content": reply, "refusal": None},
                        }
                    ],
                    "usage": self._openai_usage(row),
                },
            )
        chunk = {**base, "object": "chat.completion.chunk"}
        events: list[tuple[str | None, Any]] = [
            (
                None,
                {
                    **chunk,
                    "choices": [
                        {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
                    ],
                },
            )
        ]
        for word in reply.split():
            events.append(
                (
                    None,
                    {
                        **chunk,
                        "choices": [{"index": 0, "delta": {"content": word + " "}, "finish_reason": None}],
                    },
                )
            )
        events.append((None, {**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}))
        if include_usage:
            events.append((None, {**chunk, "choices": [], "usage": self._openai_usage(row)}))
        events.append((None, "[DONE]"))
        self._sse(events)

    def _responses(self, row: dict[str, Any], reply: str, stream: bool) -> None:
        """OpenAI's Responses API (`POST /v1/responses`): one message; a stream's events end with
        `response.completed`, which always holds the usage."""
        usage = {
            "input_tokens": row["prompt_tokens"],
            "input_tokens_details": {"cached_tokens": row["cached_tokens"]},
            "output_tokens": row["completion_tokens"],
            "output_tokens_details": {"reasoning_tokens": row["reasoning_tokens"]},
            "total_tokens": row["prompt_tokens"] + row["completion_tokens"],
        }
        item_id = "msg_" + row["response_id"]
        text = {"type": "output_text", "text": reply, "annotations": [], "logprobs": []}
        item = {"type": "message", "id": item_id, "status": "completed", "role": "assistant"}
        response = {
            "id": row["response_id"],
            "object": "response",
            "created_at": int(row["ts"]),
            "status": "completed",
            "model": row["response_model"],
            "error": None,
            "incomplete_details": None,
            "output": [{**item, "content": [text]}],
            "usage": usage,
        }
        if not stream:
            return self._json(200, response)
        started = {**response, "status": "in_progress", "output": [], "usage": None}
        events: list[tuple[str | None, Any]] = [
            ("response.created", {"type": "response.created", "response": started}),
            (
                "response.output_item.added",
                {
                    "type": "response.output_item.added",
                    "output_index": 0,
                    "item": {**item, "status": "in_progress", "content": []},
                },
            ),
        ]
        for word in reply.split():
            delta = {"item_id": item_id, "output_index": 0, "content_index": 0, "delta": word + " "}
            events.append(("response.output_text.delta", {"type": "response.output_text.delta", **delta}))
        events += [
            (
                "response.output_item.done",
                {"type": "response.output_item.done", "output_index": 0, "item": {**item, "content": [text]}},
            ),
            ("response.completed", {"type": "response.completed", "response": response}),
        ]
        for i, (_, event) in enumerate(events):
            event["sequence_number"] = i
        self._sse(events)

    def _embeddings(self, body: dict[str, Any], row: dict[str, Any]) -> None:
        inputs = body.get("input")
        inputs = inputs if isinstance(inputs, list) else [inputs]
        data = []
        for i, text in enumerate(inputs):
            vector = [(b - 128) / 128 for b in _digest(str(text))[:8]]
            if body.get("encoding_format") == "base64":
                emb: Any = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
            else:
                emb = vector
            data.append({"object": "embedding", "index": i, "embedding": emb})
        self._json(
            200,
            {
                "object": "list",
                "data": data,
                "model": row["response_model"],
                "usage": {"prompt_tokens": row["prompt_tokens"], "total_tokens": row["prompt_tokens"]},
            },
        )

    def _anthropic(self, row: dict[str, Any], reply: str, stream: bool) -> None:
        uncached = row["prompt_tokens"] - row["cached_tokens"] - row["cache_write_tokens"]
        usage = {
            "input_tokens": uncached,
            "cache_read_input_tokens": row["cached_tokens"],
            "cache_creation_input_tokens": row["cache_write_tokens"],
            "output_tokens": row["completion_tokens"],
            "service_tier": "standard",
        }
        message = {
            "id": row["response_id"],
            "type": "message",
            "role": "assistant",
            "model": row["response_model"],
            "stop_reason": "end_turn",
            "stop_sequence": None,
        }
        if not stream:
            return self._json(200, {**message, "content": [{"type": "text", "text": reply}], "usage": usage})
        start_usage = {**usage, "output_tokens": 1}
        events: list[tuple[str | None, Any]] = [
            (
                "message_start",
                {
                    "type": "message_start",
                    "message": {**message, "stop_reason": None, "content": [], "usage": start_usage},
                },
            ),
            (
                "content_block_start",
                {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
            ),
        ]
        for word in reply.split():
            events.append(
                (
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": 0,
                        "delta": {"type": "text_delta", "text": word + " "},
                    },
                )
            )
        events += [
            ("content_block_stop", {"type": "content_block_stop", "index": 0}),
            (
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                    "usage": {"output_tokens": row["completion_tokens"]},
                },
            ),
            ("message_stop", {"type": "message_stop"}),
        ]
        self._sse(events)
