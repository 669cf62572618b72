"""The checkpoint, as a short sequence of named steps, and when one is due.

  1. flush_outputs       every output of the records applied so far is delivered (the
                         service's producer; ingest also notes where its outputs end);
  2. persist_state       each owned unit's state with its next input offsets, one fenced,
                         atomic write per unit (`Ownership.persist`);
  3. acknowledge_offsets the same offsets are stored in Kafka (advisory: a restore seeks to
                         the checkpoint's own).

Outputs before state: after a crash the service resumes from the last checkpoint and
emits again, identically, what followed it; downstream drops the repeats by lineage.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Hashable, Iterable
from typing import Generic, TypeVar

import redis

from shared.metrics import CheckpointMetrics
from shared.runtime.ownership import Offsets, Ownership

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)
S = TypeVar("S")


class Checkpoints(Generic[K, S]):
    def __init__(
        self,
        ownership: Ownership[K, S],
        metrics: CheckpointMetrics,
        every_records: int,
        interval_s: float,
        flush_outputs: Callable[[], None] | None = None,
        acknowledge: Callable[[Offsets], None] | None = None,
    ) -> None:
        """`flush_outputs` None: the service flushes itself (asynchronously) and calls
        `commit`; `acknowledge` None: nothing is stored in Kafka (the monitor's faust)."""
        self.ownership = ownership
        self.metrics = metrics
        self.every_records = every_records
        self.interval_s = interval_s
        self._flush = flush_outputs
        self._acknowledge = acknowledge
        self.last_at = time.monotonic()
        self.last_seconds = 0.0
        metrics.unsaved = ownership.unsaved

    def restart_clock(self) -> None:
        """The interval counts from now: from taking ownership, not from a wait before it."""
        self.last_at = time.monotonic()

    def due(self) -> bool:
        unsaved = self.ownership.unsaved()
        return unsaved > 0 and (
            unsaved >= self.every_records or time.monotonic() - self.last_at >= self.interval_s
        )

    def checkpoint(
        self, keys: Iterable[K], reason: str, started: float | None = None
    ) -> dict[K, int]:
        """The three steps, in order; the versions written. `started`: when the service
        began to prepare it (its pause is timed from there)."""
        started = time.perf_counter() if started is None else started
        self.flush_outputs()
        return self.commit(keys, reason, started)

    def flush_outputs(self) -> None:
        assert self._flush is not None, "this service flushes its outputs itself"
        self._flush()

    def commit(self, keys: Iterable[K], reason: str, started: float | None = None) -> dict[K, int]:
        """Steps 2 and 3, once the outputs are flushed."""
        started = time.perf_counter() if started is None else started
        keys = list(keys)
        versions = self.persist_state(keys, reason)
        self.acknowledge_offsets(keys)
        self.last_at = time.monotonic()
        self.last_seconds = time.perf_counter() - started
        if keys:
            self.metrics.written(self.last_seconds, self.ownership.checkpoint_bytes())
        return versions

    def persist_state(self, keys: list[K], reason: str) -> dict[K, int]:
        return self.ownership.persist(keys, reason)

    def acknowledge_offsets(self, keys: list[K]) -> None:
        if self._acknowledge is None:
            return
        offsets = self.ownership.offsets(keys)
        self._acknowledge({key: offset - 1 for key, offset in offsets.items() if offset > 0})

    def at_cadence(self) -> bool:
        """Checkpoint every owned unit if one is due. A Redis error is logged and tried
        again at the next cadence: nothing is lost, the outputs are flushed and a crash
        meanwhile replays from the previous checkpoint. True when one was written."""
        if not self.due():
            return False
        try:
            self.checkpoint(self.ownership.keys(), "cadence")
        except redis.RedisError as exc:
            self.retry_later(exc)
            return False
        return True

    def retry_later(self, exc: redis.RedisError) -> None:
        """A checkpoint Redis refused: tried again at the next cadence."""
        log.error("checkpoint failed; will retry", extra={"fields": {"error": str(exc)}})
        self.last_at = time.monotonic()
