"""The engine's per-event step, generated once per spec as straight-line Python.

Written generically, the step loops over windows, fields and aggregations; with the bench's
two windows and one field that loop machinery (unpacking, zips, appends of bounds) cost
about 40% of the engine's time per event. The spec fixes those loops, so they are unrolled
here into source text and compiled once, the way `dataclasses` and `namedtuple` generate
their methods. Every number the step uses (sizes, lateness, horizons, names) is passed in
as a named constant, never formatted into the source, so the arithmetic is exactly that of
the spec's floats. `FeatureEngine.source` keeps the text for reading and debugging; the
property tests compare the step's output with a brute-force recomputation.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from shared.spec.features import FeatureSpec

if TYPE_CHECKING:
    from services.features.engine import Computed, FeatureEngine
    from shared.messages import Event

Step = Callable[[int, "Event"], "Computed"]


class Plan(NamedTuple):
    """One aggregation over one window."""

    window: int  # index into the spec's windows
    column: int  # index into the engine's fields
    names: tuple[str, ...]  # output names, one per op
    run: Callable[[list[Any]], Sequence[Any]]


def step_source(spec: FeatureSpec, fields: Sequence[str], plans: Sequence[Plan]) -> str:
    """The text of `make(engine, ns)`, which returns the step for this spec."""
    nf = len(fields)
    lines = [
        "def make(engine):",
        "    partitions = engine.partitions",
        "    expire = engine._expire",
        "    def process(partition, event):",
        "        state = partitions.get(partition)",
        "        if state is None:",
        "            state = partitions[partition] = PartitionState()",
        "        t = event.ts",
        "        entities = state.entities",
        "        key = event.entity",
        "        entity = entities.get(key)",
        "        if entity is None:",
        f"            entity = entities[key] = EntityState({len(spec.windows)}, {nf})",
        "        else:",
        "            entities.move_to_end(key)  # most recently seen last",
        "        prev = state.stream_time",
        "        now = state.stream_time = t if t > prev else prev",
        "        data = event.data",
    ]
    lines += [f"        v{j} = data.get(F{j})" for j in range(nf)]
    lines += ["        late = ()"]
    if spec.windows:
        lines += [
            f"        ({', '.join(f'w{i}' for i in range(len(spec.windows)))},) = entity.windows"
        ]
    for i, w in enumerate(spec.windows):
        cols = [f"c{i}_{j}" for j in range(nf)]
        lines += [f"        # window {i}: {w.kind} {w.name}", f"        times = w{i}.times"]
        if cols:
            lines += [f"        ({', '.join(cols)},) = w{i}.columns"]
        lines += [
            f"        if t < prev - L{i}:",
            f"            late += (N{i},)",
            "            state.late += 1",
            "        else:",
            "            at = bisect_right(times, t)  # after equal times: arrival order",
            "            times.insert(at, t)",
        ]
        lines += [f"            {c}.insert(at, v{j})" for j, c in enumerate(cols)]
        lines += [
            f"        cut = bisect_left(times, now - H{i})",
            "        if cut:",
            "            del times[:cut]",
        ]
        lines += [f"            del {c}[:cut]" for c in cols]
        if w.kind == "sliding":  # (t - size, t]
            lines += [
                f"        lo{i} = bisect_right(times, t - S{i})",
                f"        hi{i} = bisect_right(times, t)",
            ]
        else:  # tumbling: the window holding t; hopping: the one ending at the first step
            # boundary after t. Either way [high - size, high)
            lines += [
                f"        high = (t // P{i} + 1) * P{i}",
                f"        lo{i} = bisect_left(times, high - S{i})",
                f"        hi{i} = bisect_left(times, high)",
            ]
    pairs = ", ".join(f"T{j}: data.get(T{j})" for j in range(len(spec.passthrough)))
    lines += [f"        out = {{{pairs}}}", "        last_ts = entity.last_ts"]
    if spec.time_since_last:
        lines += ['        out["time_since_last_s"] = None if last_ts is None else t - last_ts']
    for k, plan in enumerate(plans):
        i = plan.window
        lines += [
            f"        values = c{i}_{plan.column}[lo{i}:hi{i}]",
            "        if None in values:",
            "            values = [v for v in values if v is not None]",
            f"        out.update(zip(NAMES{k}, RUN{k}(values)))",
        ]
    lines += [
        "        entity.last_ts = t if last_ts is None or t > last_ts else last_ts",
        "        entity.last_seen = now",
        "        if next(iter(entities.values())).last_seen < now - TTL:",
        "            expire(state)",
        "        return Computed(out, late)",
        "    return process",
    ]
    return "\n".join(lines) + "\n"


def step_constants(
    spec: FeatureSpec, fields: Sequence[str], plans: Sequence[Plan]
) -> dict[str, Any]:
    """The names the source refers to."""
    from services.features.engine import Computed, EntityState, PartitionState

    ns: dict[str, Any] = {
        "bisect_left": bisect_left,
        "bisect_right": bisect_right,
        "PartitionState": PartitionState,
        "EntityState": EntityState,
        "Computed": Computed,
        "TTL": spec.entity_ttl,
    }
    for i, w in enumerate(spec.windows):
        ns[f"N{i}"] = w.name
        ns[f"L{i}"] = w.lateness
        ns[f"H{i}"] = w.size + w.lateness  # how far behind stream time a window reaches
        ns[f"S{i}"] = w.size
        ns[f"P{i}"] = w.size if w.kind == "tumbling" else w.step
    for j, f in enumerate(fields):
        ns[f"F{j}"] = f
    for j, f in enumerate(spec.passthrough):
        ns[f"T{j}"] = f
    for k, plan in enumerate(plans):
        ns[f"NAMES{k}"] = plan.names
        ns[f"RUN{k}"] = plan.run
    return ns


def compile_step(engine: FeatureEngine) -> tuple[Step, str]:
    """The step bound to this engine's partitions, and its source."""
    source = step_source(engine.spec, engine.fields, engine.plans)
    ns = step_constants(engine.spec, engine.fields, engine.plans)
    exec(compile(source, f"<feature step of {id(engine):x}>", "exec"), ns)
    make: Callable[[FeatureEngine], Step] = ns["make"]
    return make(engine), source
