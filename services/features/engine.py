"""Per-entity window state and feature computation — pure logic, no Kafka or Redis.

State is per partition (it moves with the partition on rebalance): the partition's stream
time (the highest event time seen), and per entity the events folded into each window,
kept sorted by (event time, arrival). An event more than a window's allowed lateness
behind stream time is not folded into that window; it is still answered, with features
computed from what was folded. Entities idle longer than `entity_ttl` (in stream time)
are dropped, so memory stays bounded however many entities pass.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from services.features.aggregate import compile_ops
from services.features.step import Plan, Step, compile_step
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


class FeatureEngine:
    """Window state per partition, and the step that folds one event in and answers it
    (generated for the spec: see step.py)."""

    process: Step  # (partition, event) -> Computed

    def __init__(self, spec: FeatureSpec) -> None:
        self.spec = spec
        self.fields = sorted({a.field for a in spec.aggregations})
        self.partitions: dict[int, PartitionState] = {}
        index = {w.name: i for i, w in enumerate(spec.windows)}
        column = {f: i for i, f in enumerate(self.fields)}
        self.plans = [
            Plan(
                index[name],
                column[agg.field],
                tuple(f"{agg.field}_{op}_{name}" for op in agg.ops),
                compile_ops(agg.ops),
            )
            for agg in spec.aggregations
            for name in agg.windows
        ]
        self.process, self.source = compile_step(self)

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
