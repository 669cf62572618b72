"""Recently seen event ids, so a producer's retry reaches the pipeline once.

Per input partition (an entity's records share one), bounded twice: ids older than the
horizon in event time are forgotten, oldest arrival first, and never more than `max_ids`
are kept. The whole set is part of the partition's checkpoint; to keep checkpoints cheap
when it holds a million ids, arrivals are also kept in segments of SEGMENT ids whose pickled
form is computed once, when the segment fills: a checkpoint pickles only the open segment.
"""

from __future__ import annotations

import pickle
from collections import deque
from typing import Any

SEGMENT = 8192
# what a checkpoint holds; `ids` is rebuilt from the segments
_STATE = ("horizon_s", "max_ids", "newest_ts", "forgotten", "_evicted", "_sealed", "_tail")


class RecentIds:
    __slots__ = (
        "_evicted",
        "_order",
        "_sealed",
        "_tail",
        "forgotten",
        "horizon_s",
        "ids",
        "max_ids",
        "newest_ts",
    )

    def __init__(self, horizon_s: float, max_ids: int) -> None:
        self.horizon_s = horizon_s
        self.max_ids = max_ids
        self.ids: dict[str, float] = {}
        # The ids' arrival order, oldest first, for eviction. Not the dict's own order:
        # next(iter(dict)) skips the slots its deletions left at the front, which grew to
        # 50-340 µs an event once the horizon was full (1 h at 100 events/s).
        self._order: deque[str] = deque()
        self.newest_ts = float("-inf")
        self.forgotten = 0
        self._sealed: list[bytes] = []  # pickled full segments of (id, ts), oldest first
        self._tail: list[tuple[str, float]] = []  # the open segment
        self._evicted = 0  # ids forgotten from the front of the segments still held

    def seen(self, event_id: str, ts: float) -> bool:
        """True if `event_id` came before within the horizon; otherwise remember it."""
        ids = self.ids
        if event_id in ids:
            return True
        ids[event_id] = ts
        order = self._order
        order.append(event_id)
        tail = self._tail
        tail.append((event_id, ts))
        if len(tail) == SEGMENT:
            self._sealed.append(pickle.dumps(tail, pickle.HIGHEST_PROTOCOL))
            self._tail = []
        if ts > self.newest_ts:
            self.newest_ts = ts
        cutoff = self.newest_ts - self.horizon_s
        while order:
            oldest = order[0]
            if len(ids) <= self.max_ids and ids[oldest] >= cutoff:
                break
            order.popleft()
            del ids[oldest]
            self.forgotten += 1
            self._evicted += 1
            if self._sealed and self._evicted >= SEGMENT:  # a whole segment forgotten
                del self._sealed[0]
                self._evicted -= SEGMENT
        return False

    def __len__(self) -> int:
        return len(self.ids)

    def __getstate__(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in _STATE)

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        for name, value in zip(_STATE, state, strict=True):
            setattr(self, name, value)
        arrivals: list[tuple[str, float]] = []
        for segment in self._sealed:
            arrivals.extend(pickle.loads(segment))  # bytes of our own, inside the HMAC-checked blob
        arrivals.extend(self._tail)
        kept = arrivals[self._evicted :]
        self.ids = dict(kept)
        self._order = deque(event_id for event_id, _ in kept)
