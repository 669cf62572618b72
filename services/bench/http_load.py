"""A lean HTTP/1.1 client for `headwater bench api`: asyncio streams over keep-alive
connections, no HTTP library in between. A client that is slow itself is measured instead
of the server (httpx spends more per request than the API's own routes), and this one runs
in one thread beside the server under test on a 2-core machine.

Only what the API answers is read: a status line, headers and a Content-Length body.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any


class HttpError(RuntimeError):
    """An answer this client does not read (no Content-Length), or none at all."""


def request(method: str, path: str, body: bytes | None = None, length: int | None = None) -> bytes:
    """A request's head, and its body if given; `length` declares a body sent apart."""
    size = len(body) if body is not None else length
    lines = [f"{method} {path} HTTP/1.1", "Host: bench"]
    if size is not None:
        lines += ["Content-Type: application/json", f"Content-Length: {size}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """(status, body) of one response."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return status, await reader.readexactly(int(value))
    raise HttpError(f"an answer without Content-Length (status {status})")


def percentile(ordered: list[float], q: float) -> float:
    """Nearest-rank percentile (0 < q <= 100) of sorted values."""
    if not ordered:
        raise ValueError("no values")
    rank = max(1, -(-len(ordered) * q // 100))  # ceil
    return ordered[int(rank) - 1]


@dataclass(frozen=True)
class Latencies:
    requests: int
    errors: int  # answers other than the status expected, or none
    seconds: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    requests_per_s: float

    @classmethod
    def of(cls, seconds: list[float], errors: int, wall_s: float) -> Latencies:
        ordered = sorted(seconds)
        return cls(
            len(ordered),
            errors,
            wall_s,
            percentile(ordered, 50) * 1000,
            percentile(ordered, 99) * 1000,
            ordered[-1] * 1000,
            len(ordered) / wall_s,
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


async def load(port: int, path: str, clients: int, total: int, expect: int = 200) -> Latencies:
    """`total` GETs of `path` over `clients` keep-alive connections, each sending its next
    request when the last is answered; connecting is not timed."""
    connections = [await asyncio.open_connection("127.0.0.1", port) for _ in range(clients)]
    shares = [total // clients + (i < total % clients) for i in range(clients)]
    sent = request("GET", path)
    seconds: list[float] = []
    errors = 0

    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        nonlocal errors
        clock, record = time.perf_counter, seconds.append
        for _ in range(n):
            started = clock()
            writer.write(sent)
            status, _ = await read_response(reader)
            record(clock() - started)
            errors += status != expect

    started = time.perf_counter()
    try:
        await asyncio.gather(
            *(client(r, w, n) for (r, w), n in zip(connections, shares, strict=True))
        )
    finally:
        wall = time.perf_counter() - started
        for _, writer in connections:
            writer.close()
    return Latencies.of(seconds, errors, wall)


@dataclass
class Probe:
    """GET `path` every `every_s` on a connection of its own, timing each answer, and call
    `sample` at each tick (the bench reads the server's memory there)."""

    port: int
    path: str = "/healthz"
    every_s: float = 0.02
    sample: Callable[[], None] = lambda: None

    def __post_init__(self) -> None:
        self.seconds: list[float] = []
        self.failures = 0
        self._stop = asyncio.Event()

    async def run(self) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        sent = request("GET", self.path)
        try:
            while not self._stop.is_set():
                self.sample()
                started = time.perf_counter()
                writer.write(sent)
                status, _ = await read_response(reader)
                self.seconds.append(time.perf_counter() - started)
                self.failures += status != 200
                self.sample()
                await asyncio.sleep(self.every_s)
        finally:
            writer.close()

    def stop(self) -> None:
        self._stop.set()


async def post_large(port: int, path: str, body: bytes, chunk: int = 1 << 20) -> int | None:
    """POST a body with its Content-Length, a chunk at a time, while reading the answer: a
    server may answer (413) before the body is sent, and close. The status, or None."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    answer = asyncio.create_task(read_response(reader))

    async def send() -> None:
        writer.write(request("POST", path, length=len(body)))
        view = memoryview(body)
        for at in range(0, len(body), chunk):
            if answer.done():
                return
            writer.write(view[at : at + chunk])
            await writer.drain()

    with contextlib.suppress(ConnectionError, OSError):  # answered and closed: see `answer`
        await send()
    try:
        status, _ = await answer
        return status
    except (asyncio.IncompleteReadError, ConnectionError, OSError):
        return None
    finally:
        writer.close()
