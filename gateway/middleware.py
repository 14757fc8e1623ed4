"""ASGI middleware: request body size limit and request metrics.

The size limit reads the body (up to the limit) before the app sees it, so an oversized request gets a
413 whether it declares Content-Length or is chunked, and the app never buffers more than the limit.
"""

from __future__ import annotations

import json
import time

from gateway import metrics


async def _send_json(send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class BodyLimit:
    def __init__(self, app, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        too_large = f"request body larger than {self.max_bytes} bytes"
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await _send_json(send, 413, too_large)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away before sending the body
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                return await _send_json(send, 413, too_large)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()  # later calls wait for the disconnect (streaming responses)

        return await self.app(scope, replay, send)


class RequestMetrics:
    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0, status = time.perf_counter(), 500
        observed = False

        def record() -> None:
            nonlocal observed
            if observed:
                return
            observed = True
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            metrics.REQUESTS.labels(route, scope["method"], str(status)).inc()
            metrics.LATENCY.labels(route, scope["method"]).observe(time.perf_counter() - t0)

        async def wrapped(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                await send(message)
                record()  # streams: time to the first byte
                return
            await send(message)

        try:
            await self.app(scope, receive, wrapped)
        finally:
            record()
