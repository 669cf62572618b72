"""Prediction bodies parsed off the event loop, a run of pairs at a time: the same data as
parsing the body whole, the same errors for any other body, and the loop free meanwhile."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from hypothesis import given, settings
from hypothesis import strategies as st

from services.api import bodies
from services.api.bodies import PredictRoute, features_of, predict_body
from services.api.models import PredictRequest
from shared.messages.fields import MAX_DATA_FIELDS

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
)
separators = st.sampled_from([(",", ":"), (", ", ": "), (" ,\n", " :\t")])


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(max_size=8), scalars, max_size=30), separators, st.booleans())
def test_the_data_is_what_parsing_the_body_whole_gives(data, seps, ascii_only):
    body = json.dumps({"data": data}, separators=seps, ensure_ascii=ascii_only).encode()
    assert features_of(body) == json.loads(body)["data"]
    parsed = predict_body(body)
    assert isinstance(parsed, PredictRequest)
    assert parsed == PredictRequest.model_validate_json(body)
    assert [type(v) for v in parsed.data.values()] == [type(v) for v in data.values()]


def test_runs_of_pairs_add_up_to_the_whole():
    data = {f"f{i % 3000}": i * 0.5 for i in range(3 * bodies.RUN + 7)}  # names repeat
    data["dup"] = 1
    body = json.dumps({"data": data}).encode()
    assert features_of(body) == data
    assert features_of(b' { "data" : { } } \n') == {}


def test_parsing_stops_past_the_most_names_a_route_takes():
    names = MAX_DATA_FIELDS + 1
    pairs = b",".join(b'"f%d": 1' % (i % names) for i in range(10 * names))
    broken = b'{"data": {' + pairs + b', "late": [oops'  # never reached
    data = features_of(broken)
    assert data is not None
    assert MAX_DATA_FIELDS < len(data) <= MAX_DATA_FIELDS + bodies.RUN
    assert features_of(b'{"data": {' + pairs + b"}}") == {f"f{i}": 1 for i in range(names)}


MB = 1 << 20


@pytest.mark.parametrize(
    "body",
    [
        b'{"data": {"a": 1' + b" " * MB + b"x",  # whitespace the tail's patterns could split
        b'{"data": {"a": 1,' + b" " * MB + b"x",
        b'{"data": {"a"' + b" " * MB + b"x",
        b'{"data": {"a": "' + b"y" * MB,  # a string never closed
        b'{"data": {"a": "' + b"\\\\" * (MB // 2),
        b'{"data": {"a": ' + b"1" * MB + b" x",
        b" " * MB + b"{ x",
    ],
)
def test_a_body_that_does_not_match_costs_one_pass(body):
    """Linear in the body (milliseconds for a megabyte): a pattern that backtracked over
    the ways of splitting it took minutes."""
    started = time.perf_counter()
    assert features_of(body) is None
    assert time.perf_counter() - started < 0.5


@pytest.mark.parametrize(
    "body",
    [
        b'{"data": {"a": 1,}}',  # a comma before the brace
        b'{"data": {"a": 1, "b": 2,}}',
        b'{"data": {"a": {"nested": 1}}}',
        b'{"data": {"a": [1]}}',
        b'{"data": {"a": 1}, "extra": 2}',
        b'{"extra": 2, "data": {"a": 1}}',
        b'{"data": {"a": 1}}}',
        b'{"data": {"a": tru}}',
        b'{"data": {"a": NaN}}',  # json.loads takes it: left to it
        b'{"data": {"a" 1}}',
        b'{"data": {"a": "\n"}}',
        b'{"data": []}',
        b"[]",
        b"",
        b'{"data": {"a": 1}',
    ],
)
def test_any_other_body_is_left_to_a_whole_parse(body):
    assert features_of(body) is None


def app() -> FastAPI:
    """A predict-like route on PredictRoute, and the same on FastAPI's own parsing."""
    api = FastAPI()
    router = APIRouter()

    def echo(body: PredictRequest) -> dict:
        data = body.data if len(body.data) <= 100 else len(body.data)  # no large response
        return {"type": type(body).__name__, "data": data}

    router.add_api_route("/off", echo, methods=["POST"], route_class_override=PredictRoute)
    router.add_api_route("/plain", echo, methods=["POST"])
    api.include_router(router)
    return api


async def post(path: str, content: bytes, kind: str = "application/json") -> httpx.Response:
    transport = httpx.ASGITransport(app=app())
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        return await client.post(path, content=content, headers={"content-type": kind})


@pytest.mark.parametrize(
    "body",
    [
        b'{"data": {"a": 1, "b": "x", "c": null, "d": true, "e": 2.5}}',
        b'{"data": {"a": {"nested": 1}}}',
        b'{"data": {"a": 1}, "extra": 2}',
        b'{"data": {"a": NaN}}',
        b'{"data": ',
        b"[]",
    ],
)
def test_a_predict_route_answers_as_fastapis_own_parsing_does(body):
    for kind in ("application/json", "text/plain"):
        off, plain = asyncio.run(post("/off", body, kind)), asyncio.run(post("/plain", body, kind))
        assert (off.status_code, off.json()) == (plain.status_code, plain.json())


async def longest_stall(path: str, body: bytes) -> tuple[float, float]:
    """(the longest the loop went without running a 1 ms ticker, the request's time)."""
    stalls = [0.0]
    done = asyncio.Event()

    async def tick() -> None:
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            stalls.append(now - last)
            last = now

    ticker = asyncio.create_task(tick())
    await asyncio.sleep(0.01)  # the ticker runs
    started = time.perf_counter()
    response = await post(path, body)
    took = time.perf_counter() - started
    done.set()
    await ticker
    assert response.status_code == 200, response.text
    return max(stalls), took


def test_a_large_body_leaves_the_event_loop_free():
    """1.2 million pairs (25 MB), names repeating: parsed to the end, as a route must."""
    pairs = (b'"feature_%d": %d' % (i % MAX_DATA_FIELDS, i % 7) for i in range(1_200_000))
    body = b'{"data": {' + b", ".join(pairs) + b"}}"
    plain_stall, _ = asyncio.run(longest_stall("/plain", body))  # about 0.2 s here
    # The best of three: another process taking the CPU also stalls the loop (a shared
    # machine), which no parsing can help
    runs = [asyncio.run(longest_stall("/off", body)) for _ in range(3)]
    off_stall, off_took = min(runs)
    assert off_stall < plain_stall / 2, (runs, plain_stall)
    assert off_stall < off_took / 4, runs
