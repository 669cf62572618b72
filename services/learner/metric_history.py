"""Each model's metrics over the stream, as a bounded series of points: what the pipeline
page and `headwater report` chart (issue 27).

A point is taken at the first observation in each run of `every` labels learned. When the
series is full, the spacing doubles and only the first point of each doubled run is kept, so
however long the stream, the series covers all of it evenly in at most `capacity` points.
Kept in the learner's checkpoint (LearnerCore.history), so that a rollback or a replay from
a checkpoint shows the same curve up to that point.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

Values = dict[str, dict[str, float]]  # model -> metric name -> value


@dataclass(frozen=True)
class Point:
    labels: int  # labels learned when it was taken
    events: int  # events seen then
    at: float  # wall clock (UTC epoch seconds)
    ts: float | None  # the event time of the record completing the run (None: it had none)
    values: Values

    def to_wire(self) -> dict[str, Any]:
        return {
            "labels": self.labels,
            "events": self.events,
            "at": self.at,
            "ts": self.ts,
            "values": self.values,
        }


@dataclass
class MetricHistory:
    every: int = 1000
    capacity: int = 512
    points: list[Point] = field(default_factory=list)
    # labels applied to the metrics so far: the publisher adds to it and, when it reaches
    # `next_due`, calls `observe(labels, …)` (inline: a method call per record cost 3%)
    labels: int = 0

    def __post_init__(self) -> None:
        if self.every < 1 or self.capacity < 2:
            raise ValueError("a metric history needs every >= 1 and capacity >= 2")
        self._set_next()

    def _set_next(self) -> None:
        last = self.points[-1].labels if self.points else 0
        # the label count at which the next point is due: a plain attribute, compared per
        # labelled record in the learner's hot path (a method call there cost 3% of it)
        self.next_due = (last // self.every + 1) * self.every

    def due(self, labels: int) -> bool:
        """A point is due at each multiple of `every` labels not yet taken."""
        return labels >= self.next_due

    def observe(
        self, labels: int, events: int, at: float, ts: float | None, values: Mapping[str, Any]
    ) -> bool:
        """Take a point if one is due (the caller computes `values` only then: see `due`);
        True if taken."""
        if not self.due(labels):
            return False
        self.points.append(Point(labels, events, at, ts, {m: dict(v) for m, v in values.items()}))
        if len(self.points) > self.capacity:
            self.every *= 2
            kept: list[Point] = []
            for point in self.points:
                if not kept or point.labels // self.every > kept[-1].labels // self.every:
                    kept.append(point)
            self.points = kept
        self._set_next()
        return True

    def to_wire(self) -> dict[str, Any]:
        return {"every": self.every, "points": [p.to_wire() for p in self.points]}
