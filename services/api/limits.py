"""The request-size limit: a body over the limit is refused with 413 before it is read
whole, by its Content-Length or, for a body that streams in without one, as it arrives. A
huge body would otherwise be buffered and parsed on the event loop, stalling every request."""

from __future__ import annotations

import time

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.api.context import error_response


def too_large_message(max_bytes: int) -> str:
    return f"request body exceeds the {max_bytes}-byte limit (HEADWATER_API_MAX_BODY_BYTES)"


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            refusal = error_response(413, "too_large", too_large_message(self.max_bytes))
            await refusal(scope, receive, send)
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:  # the app's HTTPException handler answers
                    raise HTTPException(413, too_large_message(self.max_bytes))
            return message

        await self.app(scope, limited, send)


class RequestMetrics:
    """requests_total{route,method,status} and request_seconds{route}: a plain ASGI
    middleware (Starlette's BaseHTTPMiddleware runs the app in a task of its own)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            state = scope["app"].state
            if hasattr(state, "requests"):
                path = getattr(scope.get("route"), "path", "unmatched")
                state.requests.labels(path, scope["method"], str(status)).inc()
                state.latency.labels(path).observe(time.perf_counter() - started)
