"""Signal handling: SIGTERM, SIGINT and SIGHUP (a closed terminal) ask the run loop to stop;
they never kill it mid-batch."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

log = logging.getLogger(__name__)


@contextmanager
def stop_on_signals(
    stop: threading.Event | None = None,
    signals: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP),
) -> Iterator[threading.Event]:
    """Set `stop` on SIGTERM/SIGINT while the block runs; restore previous handlers after."""
    event = stop if stop is not None else threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield event  # signals can only be handled in the main thread; the caller sets `event`
        return

    def _handler(signum: int, _frame: FrameType | None) -> None:
        log.info("stop requested", extra={"fields": {"signal": signal.Signals(signum).name}})
        event.set()

    previous = {sig: signal.signal(sig, _handler) for sig in signals}
    try:
        yield event
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextmanager
def interrupt_on_signals(
    signals: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGHUP),
) -> Iterator[None]:
    """For one-shot commands: SIGTERM and SIGHUP act like Ctrl-C, so `finally` blocks
    (which stop child processes) run."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, signal.default_int_handler) for sig in signals}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
