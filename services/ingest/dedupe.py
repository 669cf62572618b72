"""Recently seen event ids, so a producer's retry reaches the pipeline once.

Per input partition (an entity's records share one), bounded twice: ids older than the
horizon in event time are forgotten, oldest arrival first, and never more than `max_ids`
are kept. Pickled whole into the partition's checkpoint (a plain dict pickles twice as fast
as an OrderedDict).
"""

from __future__ import annotations


class RecentIds:
    __slots__ = ("forgotten", "horizon_s", "ids", "max_ids", "newest_ts")

    def __init__(self, horizon_s: float, max_ids: int) -> None:
        self.horizon_s = horizon_s
        self.max_ids = max_ids
        self.ids: dict[str, float] = {}  # insertion order = arrival order
        self.newest_ts = float("-inf")
        self.forgotten = 0

    def seen(self, event_id: str, ts: float) -> bool:
        """True if `event_id` came before within the horizon; otherwise remember it."""
        ids = self.ids
        if event_id in ids:
            return True
        ids[event_id] = ts
        if ts > self.newest_ts:
            self.newest_ts = ts
        cutoff = self.newest_ts - self.horizon_s
        while ids:
            oldest = next(iter(ids))
            if len(ids) <= self.max_ids and ids[oldest] >= cutoff:
                break
            del ids[oldest]
            self.forgotten += 1
        return False

    def __len__(self) -> int:
        return len(self.ids)
