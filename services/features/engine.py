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


class Folded:
    """The events folded into one window of one entity, in (event time, arrival) order:
    their times in one list (bisected in C, without a key function) and the fields each
    carried in a parallel one."""

    __slots__ = ("times", "values")

    def __init__(self) -> None:
        self.times: list[float] = []
        self.values: list[dict[str, Any]] = []

    def fold(self, t: float, values: dict[str, Any]) -> None:
        at = bisect.bisect_right(self.times, t)  # after equal times: arrival order
        self.times.insert(at, t)
        self.values.insert(at, values)

    def evict(self, before: float) -> None:
        cut = bisect.bisect_left(self.times, before)
        if cut:
            del self.times[:cut]
            del self.values[:cut]

    def __getstate__(self) -> tuple[list[float], list[dict[str, Any]]]:
        return self.times, self.values

    def __setstate__(self, state: tuple[list[float], list[dict[str, Any]]]) -> None:
        self.times, self.values = state


@dataclass
class EntityState:
    last_ts: float | None = None  # latest event time of the entity so far
    last_seen: float = 0.0  # stream time when it was last seen (for expiry)
    windows: dict[str, Folded] = field(default_factory=dict)


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
            folded = entity.windows.get(window.name)
            if folded is None:
                folded = entity.windows[window.name] = Folded()
            if t < previous_stream_time - window.lateness:
                late.append(window.name)
                state.late += 1
            else:
                folded.fold(t, values)
            folded.evict(state.stream_time - self._horizon[window.name])
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
            folded = entity.windows.get(name)
            values = [] if folded is None else window_values(window, folded, t, agg.field)
            out.update(zip(names, aggregate_all(agg.ops, values), strict=True))
        return out

    def _expire(self, state: PartitionState) -> None:
        """Least recently seen first: stop at the first entity still within its TTL."""
        limit = state.stream_time - self.spec.entity_ttl
        while state.entities:
            key, oldest = next(iter(state.entities.items()))
            if oldest.last_seen >= limit:
                return
            del state.entities[key]
            state.expired += 1


def window_values(window: WindowSpec, folded: Folded, t: float, name: str) -> list[Any]:
    """Values of field `name` among the folded events inside the window answering time t."""
    low, high, high_inclusive = window.interval(t)
    times = folded.times
    if window.kind == "sliding":
        start = bisect.bisect_right(times, low)  # (low, high]
    else:
        start = bisect.bisect_left(times, low)  # [low, high)
    end = bisect.bisect_right(times, high) if high_inclusive else bisect.bisect_left(times, high)
    return [v[name] for v in folded.values[start:end] if name in v]
