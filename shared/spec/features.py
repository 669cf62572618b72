"""The `features:` section of a pipeline spec: event-time windows and aggregations."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

OPS = ("count", "sum", "mean", "min", "max", "std", "last", "distinct_count")
_DURATION = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d)$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def seconds(value: float | int | str) -> float:
    """`600`, `"10m"`, `"1.5h"`, `"250ms"` -> seconds."""
    if isinstance(value, int | float):
        return float(value)
    match = _DURATION.match(value)
    if not match:
        raise ValueError(f"{value!r} is not a duration (e.g. 30s, 10m, 1h, 7d)")
    return float(match.group(1)) * _UNIT_S[match.group(2)]


def duration_name(s: float) -> str:
    """600 -> "10m", 3600 -> "1h", 90 -> "90s": readable, deterministic feature names."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if s >= size and s % size == 0:
            return f"{int(s // size)}{unit}"
    return f"{round(s * 1000)}ms"


@dataclass(frozen=True, slots=True)
class WindowSpec:
    name: str
    kind: str  # tumbling | hopping | sliding
    size: float
    step: float
    lateness: float


@dataclass(frozen=True, slots=True)
class AggregationSpec:
    field: str
    ops: tuple[str, ...]
    windows: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class FeatureSpec:
    windows: tuple[WindowSpec, ...]
    aggregations: tuple[AggregationSpec, ...]
    time_since_last: bool = True
    passthrough: tuple[str, ...] = ()
    entity_ttl: float = 86400.0

    def names(self) -> list[str]:
        """Every output feature name, in output order."""
        out = [f"{f}" for f in self.passthrough]
        if self.time_since_last:
            out.append("time_since_last_s")
        for agg in self.aggregations:
            for w in agg.windows:
                out.extend(f"{agg.field}_{op}_{w}" for op in agg.ops)
        return out


def parse_features(doc: dict[str, Any]) -> tuple[FeatureSpec | None, list[str]]:
    """The validated section (after the JSON Schema), or the problems found, each named."""
    if not doc:
        return None, []
    problems: list[str] = []
    windows: list[WindowSpec] = []
    for i, w in enumerate(doc["windows"]):
        path = f"features.windows[{i}]"
        try:
            size = seconds(w["size"])
            step = seconds(w.get("step", w["size"]))
            lateness = seconds(w.get("lateness", 0))
        except ValueError as exc:
            problems.append(f"{path}: {exc}")
            continue
        if w["kind"] == "hopping" and "step" not in w:
            problems.append(f"{path}.step: a hopping window needs a step")
        if w["kind"] != "hopping" and "step" in w:
            problems.append(f"{path}.step: only hopping windows take a step")
        if size <= 0 or step <= 0 or step > size or lateness < 0:
            problems.append(f"{path}: need size > 0, 0 < step <= size and lateness >= 0")
        name = w.get("name") or duration_name(size)
        windows.append(WindowSpec(name, w["kind"], size, step, lateness))
    names = [w.name for w in windows]
    for i, name in enumerate(names):
        if name in names[:i]:
            problems.append(f"features.windows[{i}].name: duplicate window name {name!r}")
    aggregations = []
    for i, a in enumerate(doc.get("aggregations", [])):
        chosen = tuple(a.get("windows", names))
        for w in chosen:
            if w not in names:
                problems.append(f"features.aggregations[{i}].windows: no window named {w!r}")
        aggregations.append(AggregationSpec(a["field"], tuple(dict.fromkeys(a["ops"])), chosen))
    spec = FeatureSpec(
        tuple(windows),
        tuple(aggregations),
        doc.get("time_since_last", True),
        tuple(doc.get("passthrough", ())),
        seconds(doc.get("entity_ttl", 86400)),
    )
    all_names = spec.names()
    for name in sorted({n for n in all_names if all_names.count(n) > 1}):
        problems.append(f"features: feature name {name!r} would be produced twice")
    return (None if problems else spec), problems
