"""Run a service, and build it again when Redis lost its state while it ran.

A service that finds its checkpoint store reset (Redis restarted without persistence, or
replaced) cannot go on from its memory: what it did since its last checkpoint was never
saved. It stops with `StateLostError`; built again, it restores each unit from its
checkpoint (put back from the checkpoint topic), seeks there and emits again, identically,
what followed, which downstream drops by lineage.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Protocol

from shared.runtime.ownership import StateLostError

log = logging.getLogger(__name__)

PAUSE_S = 1.0  # between two attempts: a Redis that keeps losing its data is not hammered


class Runnable(Protocol):
    def run(self, stop: threading.Event) -> None: ...


def run_restarting(service: str, build: Callable[[], Runnable], stop: threading.Event) -> None:
    while True:
        try:
            build().run(stop)
            return
        except StateLostError as exc:
            if stop.is_set():
                raise
            log.error(
                "state lost; starting again from the checkpoints",
                extra={"fields": {"service": service, "error": str(exc)}},
            )
            if stop.wait(PAUSE_S):
                return
