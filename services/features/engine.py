"""Per-entity window state and feature computation — pure logic, no Kafka or Redis.

State is per partition (it moves with the partition on rebalance): the partition's stream
time (the highest event time seen), and per entity the events folded into each window,
kept sorted by (event time, arrival). An event more than a window's allowed lateness
behind stream time is not folded into that window; it is still answered, with features
computed from what was folded. Entities idle longer than `entity_ttl` (in stream time)
are dropped, so memory stays bounded however many entities pass.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from services.features.aggregate import compile_ops
from shared.messages import Event
from shared.spec.features import FeatureSpec


class Folded:
    """The events folded into one window of one entity, in (event time, arrival) order:
    their times in one list (bisected in C, without a key function) and, per aggregated
    field, a parallel column of values (None where an event lacked the field), so a
    window's values are one slice."""

    __slots__ = ("columns", "times")

    def __init__(self, fields: int) -> None:
        self.times: list[float] = []
        self.columns: list[list[Any]] = [[] for _ in range(fields)]

    def evict(self, cut: int) -> None:
        """Drop the first `cut` events (those before the window's horizon)."""
        del self.times[:cut]
        for column in self.columns:
            del column[:cut]

    def __getstate__(self) -> tuple[list[float], list[list[Any]]]:
        return self.times, self.columns

    def __setstate__(self, state: tuple[list[float], list[list[Any]]]) -> None:
        self.times, self.columns = state


class EntityState:
    __slots__ = ("last_seen", "last_ts", "windows")

    def __init__(self, windows: int, fields: int) -> None:
        self.last_ts: float | None = None  # latest event time of the entity so far
        self.last_seen = 0.0  # stream time when it was last seen (for expiry)
        self.windows = [Folded(fields) for _ in range(windows)]  # in the spec's window order

    def __getstate__(self) -> tuple[float | None, float, list[Folded]]:
        return self.last_ts, self.last_seen, self.windows

    def __setstate__(self, state: tuple[float | None, float, list[Folded]]) -> None:
        self.last_ts, self.last_seen, self.windows = state


@dataclass
class PartitionState:
    stream_time: float = float("-inf")
    entities: OrderedDict[str, EntityState] = field(default_factory=OrderedDict)  # LRU order
    late: int = 0  # (event, window) pairs not folded in
    expired: int = 0


class Computed(NamedTuple):
    features: dict[str, Any]
    late_windows: tuple[str, ...]


class _Plan(NamedTuple):
    """One aggregation over one window, compiled once."""

    window: int  # index into the spec's windows
    column: int  # index into the engine's fields
    names: tuple[str, ...]  # output names, one per op
    run: Callable[[list[Any]], Sequence[Any]]


class FeatureEngine:
    def __init__(self, spec: FeatureSpec) -> None:
        self.spec = spec
        self.fields = sorted({a.field for a in spec.aggregations})
        self.partitions: dict[int, PartitionState] = {}
        # per window: name, lateness, horizon (size + lateness), sliding?, size, step
        self._compiled = [
            (
                w.name,
                w.lateness,
                w.size + w.lateness,
                w.kind == "sliding",
                w.size,
                w.size if w.kind == "tumbling" else w.step,
            )
            for w in spec.windows
        ]
        index = {w.name: i for i, w in enumerate(spec.windows)}
        column = {f: i for i, f in enumerate(self.fields)}
        self._plan = [
            _Plan(
                index[name],
                column[agg.field],
                tuple(f"{agg.field}_{op}_{name}" for op in agg.ops),
                compile_ops(agg.ops),
            )
            for agg in spec.aggregations
            for name in agg.windows
        ]

    def process(self, partition: int, event: Event) -> Computed:
        state = self.partitions.get(partition)
        if state is None:
            state = self.partitions[partition] = PartitionState()
        t = event.ts
        entities = state.entities
        entity = entities.get(event.entity)
        if entity is None:
            entity = entities[event.entity] = EntityState(len(self._compiled), len(self.fields))
        else:
            entities.move_to_end(event.entity)  # most recently seen last
        previous_stream_time = state.stream_time
        now = state.stream_time = t if t > previous_stream_time else previous_stream_time
        data = event.data
        row = [data.get(f) for f in self.fields]
        late: tuple[str, ...] = ()
        bounds = []
        # Written out rather than split into calls: this loop runs per event and window.
        for (name, lateness, horizon, sliding, size, step), folded in zip(  # noqa: B905
            self._compiled, entity.windows
        ):
            times = folded.times
            if t < previous_stream_time - lateness:
                late += (name,)
                state.late += 1
            else:
                at = bisect_right(times, t)  # after equal times: arrival order
                times.insert(at, t)
                for column, value in zip(folded.columns, row):  # noqa: B905
                    column.insert(at, value)
            cut = bisect_left(times, now - horizon)
            if cut:
                folded.evict(cut)
            if sliding:  # (t - size, t]
                bounds.append((bisect_right(times, t - size), bisect_right(times, t)))
            else:  # tumbling: the window holding t; hopping: the one ending at the first
                # step boundary after t. Either way [high - size, high)
                high = (t // step + 1) * step
                bounds.append((bisect_left(times, high - size), bisect_left(times, high)))
        out: dict[str, Any] = {f: data.get(f) for f in self.spec.passthrough}
        last_ts = entity.last_ts
        if self.spec.time_since_last:
            out["time_since_last_s"] = None if last_ts is None else t - last_ts
        windows = entity.windows
        for w, col, names, run in self._plan:
            start, end = bounds[w]
            values = windows[w].columns[col][start:end]
            if None in values:
                values = [v for v in values if v is not None]
            out.update(zip(names, run(values)))  # noqa: B905
        entity.last_ts = t if last_ts is None or t > last_ts else last_ts
        entity.last_seen = now
        self._expire(state)
        return Computed(out, late)

    def _expire(self, state: PartitionState) -> None:
        """Least recently seen first: stop at the first entity still within its TTL."""
        limit = state.stream_time - self.spec.entity_ttl
        entities = state.entities
        while entities:
            key, oldest = next(iter(entities.items()))
            if oldest.last_seen >= limit:
                return
            del entities[key]
            state.expired += 1
