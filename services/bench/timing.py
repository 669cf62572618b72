"""Timing a service running in a thread of the benchmark process, the same way for each."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol

from services.bench.cpu import CpuMeter


class _Flushable(Protocol):
    def flush(self, timeout: float = ...) -> None: ...


def timed_rate(
    run: Callable[[threading.Event], None],
    processed: Callable[[], int],
    producer: _Flushable,
    n: int,
    timeout: float = 600,
    warmup: int = 0,
    meter: CpuMeter | None = None,
) -> float:
    """Events/s from the first processed record until `n` are processed and every output
    is acknowledged by the broker (a flush); the service is then stopped.

    With `warmup`, the clock starts at the first moment more than `warmup` records are
    processed and counts only those processed after it (a service that hands back results
    a batch at a time passes the mark with a jump). A stream too short to leave anything
    after the warm-up is timed from its first record. A `meter` measures the same span."""
    stop = threading.Event()
    thread = threading.Thread(target=run, args=(stop,), daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while processed() == 0:
        _check(deadline, thread)
        time.sleep(0.0005)
    started, done_at_start = time.perf_counter(), 1
    if meter is not None:
        meter.start()
    while (done := processed()) < n:
        if warmup and done_at_start <= warmup < done:
            started, done_at_start = time.perf_counter(), done
            if meter is not None:
                meter.start()
        _check(deadline, thread)
        time.sleep(0.0005 if done_at_start <= warmup else 0.01)
    producer.flush()
    elapsed = time.perf_counter() - started
    if meter is not None:
        meter.stop(n - done_at_start)
    stop.set()
    thread.join(30)
    return (n - done_at_start) / elapsed


def _check(deadline: float, thread: threading.Thread) -> None:
    if not thread.is_alive():
        raise RuntimeError("the service stopped during the benchmark")
    if time.monotonic() > deadline:
        raise TimeoutError("the benchmark stream was not finished in time")
