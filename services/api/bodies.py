"""Prediction bodies parsed off the event loop, a piece at a time.

FastAPI parses a JSON body on the event loop, and validates it there. A body is at most
HEADWATER_API_MAX_BODY_BYTES (services/api/limits.py refuses a larger one unread), but up to
that it is parsed, and every other request, /healthz included, waits meanwhile. Running the
parse in a worker thread is not enough by itself: `json.loads` and pydantic's validation are
each one call into C (or Rust) that holds the interpreter lock until it returns (45 MB of
features: 2 s of json.loads, 0.9 s of validation, and the loop stopped for as long).

So `PredictRoute` parses a predict body in a worker thread, in pieces: the `data` object is
cut into runs of up to `RUN` `"name": value` pairs (a regular expression finds where each
run ends), and msgspec decodes and type-checks each run, a fraction of a millisecond, with
the loop free to run between two. FastAPI then gets the validated `PredictRequest` and
keeps it as it is. A body the cutter does not take (malformed, or anything but
`{"data": {...}}` with scalar values) is parsed whole in the thread, then validated as
before, so its error is the one it always was.

The route refuses data of more than MAX_DATA_FIELDS names (shared/messages/fields.py), so
the cutter stops once it holds more: the route refuses those as it always did (422
`too_large`), without a huge body parsed, held in memory, or checked for errors past that
point (such a body with broken JSON further on is `too_large` now, not `invalid_request`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Coroutine
from typing import Any, cast

import msgspec
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from services.api.models import PredictRequest, Scalar
from shared.messages.fields import MAX_DATA_FIELDS

RUN = 2000  # pairs decoded in one call: about 0.3 ms of holding the interpreter
_DECODE = msgspec.json.Decoder(dict[str, Scalar])
# Possessive quantifiers (`*+`, `++`): what one matched is never given back, so a body
# that fails to match costs one pass, not one per way of splitting its whitespace (a
# greedy `\s*` next to another took 0.2 s for 16,000 spaces, and grew with the square).
_STRING = rb'"(?:[^"\\]|\\.)*+"'
_PAIR = rb"\s*+" + _STRING + rb"\s*+:\s*+(?:" + _STRING + rb'|[^\s,"{}\[\]]++)\s*+'
_HEAD = re.compile(rb'\s*+\{\s*+"data"\s*+:\s*+\{')
_RUN = re.compile(rb"(?:" + _PAIR + rb",){1,%d}" % RUN)
_TAIL = re.compile(rb"(" + _PAIR + rb")?\s*+\}\s*+\}\s*+\Z")


def features_of(body: bytes | bytearray) -> dict[str, Any] | None:
    """The `data` of a `{"data": {...}}` body with scalar values, decoded a run of pairs
    at a time, or its first runs once they hold more than MAX_DATA_FIELDS names; None for
    any other body (the caller parses it whole)."""
    head = _HEAD.match(body)
    if head is None:
        return None
    data: dict[str, Any] = {}
    at = head.end()
    try:
        while (run := _RUN.match(body, at)) is not None:
            data.update(_DECODE.decode(b"{" + body[at : run.end() - 1] + b"}"))
            if len(data) > MAX_DATA_FIELDS:  # refused whatever follows
                return data
            at = run.end()
        tail = _TAIL.match(body, at)
        if tail is None or (tail[1] is None and data):  # a comma before the brace
            return None
        if tail[1] is not None:
            data.update(_DECODE.decode(b"{" + tail[1] + b"}"))
    except msgspec.DecodeError:  # not JSON, or a value that is not a scalar
        return None
    return data


def predict_body(body: bytes | bytearray) -> PredictRequest | Any:
    """The validated body, or (from a body `features_of` does not take) the parsed JSON
    for FastAPI to validate; json.JSONDecodeError for one that is not JSON."""
    data = features_of(body)
    if data is None:
        return json.loads(body)
    return PredictRequest.model_construct(data=data)


class PredictBodyRequest(Request):
    async def body(self) -> bytes:
        """A JSON body in one growing buffer: Starlette joins its chunks at the end, a copy
        of the whole body on the loop (4 bodies of 45 MB: /healthz waited up to 100 ms,
        and the API peaked at 481 MB; in one buffer, 4-44 ms and 280 MB). Only JSON goes
        to `predict_body`, which reads the buffer as it is; any other body becomes bytes
        for FastAPI to refuse."""
        if not hasattr(self, "_body"):
            received = bytearray()
            async for chunk in self.stream():
                received += chunk
            kind = self.headers.get("content-type", "").split(";")[0].strip().lower()
            json_body = kind.startswith("application/") and kind.endswith(("/json", "+json"))
            self._body = cast(bytes, received) if json_body else bytes(received)
        return self._body

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            self._json = await run_in_threadpool(predict_body, body)
        return self._json


class PredictRoute(APIRoute):
    """A route whose JSON body is a `PredictRequest`, parsed by `predict_body` in a worker
    thread (FastAPI's documented way to change how a route reads its request)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def parsed_off_the_loop(request: Request) -> Response:
            return await handle(PredictBodyRequest(request.scope, request.receive))

        return parsed_off_the_loop
