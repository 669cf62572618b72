"""Per-entity window state and feature computation — pure logic, no Kafka or Redis.

State is per partition (it moves with the partition on rebalance): the partition's stream
time (the highest event time seen), and per entity the events folded into each window,
kept sorted by (event time, arrival). An event more than a window's allowed lateness
behind stream time is not folded into that window; it is still answered, with features
computed from what was folded. Entities idle longer than `entity_ttl` (in stream time)
are dropped, so memory stays bounded however many entities pass.
"""

from __future__ import annotations

import bisect
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from services.features.aggregate import aggregate_all
from shared.messages import Event
from shared.spec.features import FeatureSpec, WindowSpec

Folded = tuple[float, int, dict[str, Any]]  # (event time, arrival seq, the fields we need)


@dataclass
class EntityState:
    last_ts: float | None = None  # latest event time of the entity so far
    last_seen: float = 0.0  # stream time when it was last seen (for expiry)
    windows: dict[str, list[Folded]] = field(default_factory=dict)


@dataclass
class PartitionState:
    stream_time: float = float("-inf")
    seq: int = 0
    entities: OrderedDict[str, EntityState] = field(default_factory=OrderedDict)  # LRU order
    late: int = 0  # (event, window) pairs not folded in
    expired: int = 0


@dataclass(frozen=True, slots=True)
class Computed:
    features: dict[str, Any]
    late_windows: tuple[str, ...]


class FeatureEngine:
    def __init__(self, spec: FeatureSpec) -> None:
        self.spec = spec
        self.fields = sorted({a.field for a in spec.aggregations})
        self.partitions: dict[int, PartitionState] = {}
        self._horizon = {w.name: w.size + w.lateness for w in spec.windows}
        by_window = {w.name: w for w in spec.windows}
        # (aggregation, window name, window, output names), computed once
        self._plan = [
            (agg, name, by_window[name], [f"{agg.field}_{op}_{name}" for op in agg.ops])
            for agg in spec.aggregations
            for name in agg.windows
        ]

    def process(self, partition: int, event: Event) -> Computed:
        state = self.partitions.setdefault(partition, PartitionState())
        t = event.ts
        entity = state.entities.pop(event.entity, None) or EntityState()
        state.entities[event.entity] = entity  # most recently seen last
        previous_stream_time = state.stream_time
        state.stream_time = max(state.stream_time, t)
        state.seq += 1
        values = {f: event.data[f] for f in self.fields if event.data.get(f) is not None}
        late = []
        for window in self.spec.windows:
            folded = entity.windows.setdefault(window.name, [])
            if t < previous_stream_time - window.lateness:
                late.append(window.name)
                state.late += 1
            else:
                bisect.insort(folded, (t, state.seq, values), key=lambda f: (f[0], f[1]))
            self._evict(folded, state.stream_time - self._horizon[window.name])
        features = self._features(event, entity, t)
        entity.last_ts = t if entity.last_ts is None else max(entity.last_ts, t)
        entity.last_seen = state.stream_time
        self._expire(state)
        return Computed(features, tuple(late))

    def _features(self, event: Event, entity: EntityState, t: float) -> dict[str, Any]:
        out: dict[str, Any] = {f: event.data.get(f) for f in self.spec.passthrough}
        if self.spec.time_since_last:
            out["time_since_last_s"] = None if entity.last_ts is None else t - entity.last_ts
        for agg, name, window, names in self._plan:
            values = window_values(window, entity.windows.get(name, []), t, agg.field)
            out.update(zip(names, aggregate_all(agg.ops, values), strict=True))
        return out

    @staticmethod
    def _evict(folded: list[Folded], before: float) -> None:
        cut = bisect.bisect_left(folded, before, key=lambda f: f[0])
        if cut:
            del folded[:cut]

    def _expire(self, state: PartitionState) -> None:
        """Least recently seen first: stop at the first entity still within its TTL."""
        limit = state.stream_time - self.spec.entity_ttl
        while state.entities:
            key, oldest = next(iter(state.entities.items()))
            if oldest.last_seen >= limit:
                return
            del state.entities[key]
            state.expired += 1


def window_values(window: WindowSpec, folded: list[Folded], t: float, name: str) -> list[Any]:
    """Values of field `name` among the folded events inside the window answering time t."""
    low, high, high_inclusive = window.interval(t)
    start = bisect.bisect_right(folded, low, key=lambda f: f[0])
    if window.kind != "sliding":
        start = bisect.bisect_left(folded, low, key=lambda f: f[0])  # [low, high)
    end = (
        bisect.bisect_right(folded, high, key=lambda f: f[0])
        if high_inclusive
        else bisect.bisect_left(folded, high, key=lambda f: f[0])
    )
    return [f[2][name] for f in folded[start:end] if name in f[2]]
