"""Recently seen event ids, so a producer's retry reaches the pipeline once.

Per input partition (an entity's records share one), bounded twice: ids older than the
horizon in event time are forgotten, oldest arrival first, and never more than `max_ids`
are kept. The whole set is part of the partition's checkpoint; to keep checkpoints cheap
when it holds a million ids, arrivals are also kept in segments of SEGMENT ids whose pickled
form is computed once, when the segment fills: a checkpoint pickles only the open segment.
"""

from __future__ import annotations

import pickle
from typing import Any

SEGMENT = 8192
# what a checkpoint holds; `ids` is rebuilt from the segments
_STATE = ("horizon_s", "max_ids", "newest_ts", "forgotten", "_evicted", "_sealed", "_tail")


class RecentIds:
    __slots__ = (
        "_evicted",
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
        self.ids: dict[str, float] = {}  # insertion order = arrival order
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
        tail = self._tail
        tail.append((event_id, ts))
        if len(tail) == SEGMENT:
            self._sealed.append(pickle.dumps(tail, pickle.HIGHEST_PROTOCOL))
            self._tail = []
        if ts > self.newest_ts:
            self.newest_ts = ts
        cutoff = self.newest_ts - self.horizon_s
        while ids:
            oldest = next(iter(ids))
            if len(ids) <= self.max_ids and ids[oldest] >= cutoff:
                break
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
        self.ids = dict(arrivals[self._evicted :])
