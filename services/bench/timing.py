"""Timing a service running in a thread of the benchmark process, the same way for each."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol


class _Flushable(Protocol):
    def flush(self, timeout: float = ...) -> None: ...


def timed_rate(
    run: Callable[[threading.Event], None],
    processed: Callable[[], int],
    producer: _Flushable,
    n: int,
    timeout: float = 600,
) -> float:
    """Events/s from the first processed record until `n` are processed and every output
    is acknowledged by the broker (a flush); the service is then stopped."""
    stop = threading.Event()
    thread = threading.Thread(target=run, args=(stop,), daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while processed() == 0:
        _check(deadline, thread)
        time.sleep(0.0005)
    started = time.perf_counter()
    while processed() < n:
        _check(deadline, thread)
        time.sleep(0.01)
    producer.flush()
    elapsed = time.perf_counter() - started
    stop.set()
    thread.join(30)
    return (n - 1) / elapsed


def _check(deadline: float, thread: threading.Thread) -> None:
    if not thread.is_alive():
        raise RuntimeError("the service stopped during the benchmark")
    if time.monotonic() > deadline:
        raise TimeoutError("the benchmark stream was not finished in time")
