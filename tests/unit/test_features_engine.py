"""Property tests: every emitted feature equals a brute-force recomputation from the events
folded in so far — out-of-order events within and beyond the allowed lateness included."""

from __future__ import annotations

import itertools
import math
import statistics

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from services.features.engine import FeatureEngine
from shared.messages import Event
from shared.spec.features import OPS as OPS_ALL
from shared.spec.features import parse_features, seconds

SECTION = {
    "windows": [
        {"kind": "sliding", "size": 10, "lateness": 3},
        {"kind": "tumbling", "size": "5s"},
        {"kind": "hopping", "size": 8, "step": 2, "lateness": "5s", "name": "hop"},
    ],
    "aggregations": [
        {
            "field": "x",
            "ops": ["count", "sum", "mean", "min", "max", "std", "last", "distinct_count"],
        },
        {"field": "s", "ops": ["count", "last", "distinct_count"], "windows": ["10s", "hop"]},
    ],
    "passthrough": ["x"],
    "entity_ttl": "1000d",
}


def spec():
    parsed, problems = parse_features(SECTION)
    assert not problems
    return parsed


def interval_contains(kind, size, step, t, ts):
    if kind == "sliding":
        return t - size < ts <= t
    step = size if kind == "tumbling" else step
    end = (math.floor(t / step) + 1) * step
    return end - size <= ts < end


def expected_op(op, values):
    nums = [v for v in values if type(v) in (int, float)]
    if op == "count":
        return len(values)
    if op == "last":
        return values[-1] if values else None
    if op == "distinct_count":
        return len({(type(v).__name__, v) for v in values})
    if op == "sum":
        return math.fsum(nums)
    if not nums:
        return None
    return {
        "mean": lambda: math.fsum(nums) / len(nums),
        "min": lambda: min(nums),
        "max": lambda: max(nums),
        "std": lambda: statistics.pstdev(nums),
    }[op]()


def brute_force(spec, events):
    """Recompute every event's features from scratch, from the event list alone."""
    out = []
    now = list(itertools.accumulate((e.ts for e in events), max))  # stream time after each
    for i, e in enumerate(events):
        before = events[:i]
        stream_prev = max((b.ts for b in before), default=-math.inf)
        stream_now = max(stream_prev, e.ts)
        mine = [(j, b) for j, b in enumerate(events[: i + 1]) if b.entity == e.entity]
        # Idle entities are forgotten: once stream time, after some event, is more than the
        # TTL past the entity's last arrival, what came before does not count.
        for k in range(len(mine) - 1, 0, -1):
            if now[mine[k][0] - 1] - spec.entity_ttl > now[mine[k - 1][0]]:
                mine = mine[k:]
                break
        features = {f: e.data.get(f) for f in spec.passthrough}
        previous = [b.ts for _, b in mine[:-1]]
        if spec.time_since_last:
            features["time_since_last_s"] = e.ts - max(previous) if previous else None
        for w in spec.windows:

            def folded(j, b, w=w):
                prior = max((c.ts for c in events[:j]), default=-math.inf)
                return not b.ts < prior - w.lateness

            kept = [
                (b.ts, j, b)
                for j, b in mine
                if folded(j, b)
                and b.ts >= stream_now - w.size - w.lateness
                and interval_contains(w.kind, w.size, w.step, e.ts, b.ts)
            ]
            kept.sort(key=lambda k: (k[0], k[1]))
            for agg in spec.aggregations:
                if w.name not in agg.windows:
                    continue
                values = [
                    b.data[agg.field] for _, _, b in kept if b.data.get(agg.field) is not None
                ]
                for op in agg.ops:
                    features[f"{agg.field}_{op}_{w.name}"] = expected_op(op, values)
        out.append(features)
    return out


values_x = st.one_of(st.none(), st.integers(-5, 5), st.floats(-1e6, 1e6, allow_nan=False))
events_strategy = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", "c"]),
        st.floats(0, 40, allow_nan=False).map(lambda v: round(v, 1)),  # ties happen
        values_x,
        st.one_of(st.none(), st.sampled_from(["u", "v", "w"])),
    ),
    max_size=60,
)


def as_events(raw):
    return [
        Event(f"e{i}", entity, ts, {k: v for k, v in (("x", x), ("s", s_)) if v is not None})
        for i, (entity, ts, x, s_) in enumerate(raw)
    ]


def assert_features_equal_brute_force(s, events):
    engine = FeatureEngine(s)
    got = [engine.process(0, e).features for e in events]
    want = brute_force(s, events)
    for g, w in zip(got, want, strict=True):
        assert g.keys() == w.keys()
        assert list(g) == s.names()  # in the order the spec documents
        for key, value in w.items():
            if "_std_" in key and value is not None:
                assert g[key] == pytest.approx(value, rel=1e-9, abs=1e-9), key
            else:
                assert g[key] == value, key


@settings(max_examples=300, deadline=None)
@given(events_strategy)
def test_features_equal_brute_force(raw):
    assert_features_equal_brute_force(spec(), as_events(raw))


@st.composite
def sections(draw):
    """Any mix of windows, aggregations, passthrough and time_since_last: the engine's
    step is generated per spec, so each shape is its own code."""
    windows = []
    for i in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["sliding", "tumbling", "hopping"]))
        size = draw(st.sampled_from([2, 5, 8, 10]))
        window = {"kind": kind, "size": size, "name": f"w{i}"}
        if kind == "hopping":
            window["step"] = draw(st.sampled_from([d for d in (1, 2, 4, 5) if d <= size]))
        if draw(st.booleans()):
            window["lateness"] = draw(st.sampled_from([0, 1, 3, 5]))
        windows.append(window)
    names = [w["name"] for w in windows]
    aggregations = [
        {
            "field": field,
            "ops": draw(st.lists(st.sampled_from(OPS_ALL), min_size=1, max_size=8, unique=True)),
            "windows": draw(st.lists(st.sampled_from(names), min_size=1, unique=True)),
        }
        for field in draw(st.lists(st.sampled_from(["x", "s"]), max_size=2, unique=True))
    ]
    return {
        "windows": windows,
        "aggregations": aggregations,
        "passthrough": draw(st.lists(st.sampled_from(["x", "s"]), unique=True)),
        "time_since_last": draw(st.booleans()),
        "entity_ttl": draw(st.sampled_from(["1000d", 2, 6, 15])),  # event times span 0-40 s
    }


@settings(max_examples=200, deadline=None)
@given(sections(), events_strategy)
def test_features_equal_brute_force_for_any_spec(section, raw):
    s, problems = parse_features(section)
    assert not problems, problems
    assert_features_equal_brute_force(s, as_events(raw))


def test_late_events_are_counted_and_still_answered():
    engine = FeatureEngine(spec())
    engine.process(0, Event("e1", "a", 100.0, {"x": 1}))
    late = engine.process(0, Event("e2", "a", 90.0, {"x": 2}))  # 10 s behind: late for all
    assert late.late_windows == ("10s", "5s", "hop")
    assert late.features["x_count_10s"] == 0  # its window (80, 90] holds nothing folded
    again = engine.process(0, Event("e3", "a", 101.0, {"x": 3}))
    assert again.features["x_sum_10s"] == 4.0  # e2 was never folded in
    assert engine.partitions[0].late == 3


def test_idle_entities_expire_and_memory_stays_bounded():
    section = {**SECTION, "entity_ttl": "60s"}
    engine = FeatureEngine(parse_features(section)[0])
    for i in range(20_000):
        engine.process(0, Event(f"e{i}", f"entity-{i}", float(i), {"x": 1.0}))
    state = engine.partitions[0]
    assert len(state.entities) <= 62
    assert state.expired >= 19_900


def test_feature_names_are_readable_and_deterministic():
    assert spec().names()[:4] == ["x", "time_since_last_s", "x_count_10s", "x_sum_10s"]
    assert "s_distinct_count_hop" in spec().names()


@pytest.mark.parametrize(
    ("section", "problem"),
    [
        ({"windows": [{"kind": "hopping", "size": 10}]}, "needs a step"),
        ({"windows": [{"kind": "sliding", "size": 10, "step": 5}]}, "only hopping"),
        ({"windows": [{"kind": "hopping", "size": 5, "step": 10}]}, "step <= size"),
        (
            {"windows": [{"kind": "sliding", "size": 10}, {"kind": "tumbling", "size": "10s"}]},
            "duplicate window name",
        ),
        (
            {
                "windows": [{"kind": "sliding", "size": 10}],
                "aggregations": [{"field": "x", "ops": ["sum"], "windows": ["1h"]}],
            },
            "no window named '1h'",
        ),
    ],
)
def test_bad_feature_sections_are_named(section, problem):
    parsed, problems = parse_features(section)
    assert parsed is None
    assert any(problem in p for p in problems), problems


def test_durations():
    assert seconds("250ms") == 0.25
    assert seconds("10m") == 600
    assert seconds(1.5) == 1.5
    with pytest.raises(ValueError, match="not a duration"):
        seconds("ten minutes")


@given(
    st.lists(
        st.one_of(st.integers(-9, 9), st.floats(-1e9, 1e9, allow_nan=False), st.text(max_size=2)),
        max_size=20,
    )
)
def test_aggregate_all_equals_each_op_alone(values):
    from services.features.aggregate import aggregate, aggregate_all
    from shared.spec.features import OPS

    assert aggregate_all(OPS, values) == [aggregate(op, values) for op in OPS]


def test_huge_values_give_null_not_an_error():
    from services.features.aggregate import aggregate_all

    assert aggregate_all(["count", "sum", "mean", "std", "max"], [1e308, 1e308]) == [
        2,
        None,
        None,
        None,
        1e308,
    ]


@given(
    st.lists(st.sampled_from(OPS_ALL), min_size=1, max_size=8),
    st.lists(
        st.one_of(
            st.floats(allow_nan=False),  # infinities and -0.0 included
            st.sampled_from([0.0, -0.0, 1e308, -1e308]),
            st.integers(-(10**20), 10**20),
            st.booleans(),
            st.text(max_size=2),
        ),
        max_size=4,
    ),
)
@example(["sum", "mean", "std"], [-0.0])  # fsum turns -0.0 into 0.0
@example(["std"], [math.inf])
@example(["sum", "mean", "min", "max", "std"], [1e308, 1e308])  # overflow: None, not an error
# the six numeric ops in their canonical order take a shortcut of their own
@example(["count", "sum", "mean", "min", "max", "std"], [-0.0])
@example(["count", "sum", "mean", "min", "max", "std"], [2.5, "a", 1])
@example(["count", "sum", "mean", "min", "max", "std"], [math.inf])
@example(["count", "sum", "mean", "min", "max", "std"], [])
def test_compiled_ops_equal_aggregate_all_bit_for_bit(ops, values):
    from services.features.aggregate import aggregate_all, compile_ops

    got = list(compile_ops(ops)(values))
    want = aggregate_all(ops, values)
    assert [repr(v) for v in got] == [repr(v) for v in want]  # repr tells -0.0 from 0.0
