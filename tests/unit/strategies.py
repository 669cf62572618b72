"""Hypothesis strategies shared by unit tests."""

import math

from hypothesis import strategies as st

_ok_id = st.text(min_size=1, max_size=4)
_ok_key = st.text(min_size=1, max_size=3)
_values = st.one_of(
    st.floats(),  # NaN and infinities included
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(-(2**63), 2**64 - 1),
    st.booleans(),
    st.none(),
    st.text(max_size=5),
    st.just("x" * 65_537),
    st.binary(max_size=3),
)
# mostly well-formed, so that what the fast path accepts is exercised as much as what it refuses
_ids = st.one_of(_ok_id, _ok_id, _ok_id, st.just(""), st.just("i" * 257), st.integers(0, 3))
_keys = st.one_of(_ok_key, _ok_key, _ok_key, st.just(""), st.just("k" * 256), st.just("k" * 257))
_times = st.one_of(
    st.floats(0, 2e11),
    st.floats(0, 2e11),
    st.floats(-1, 0, exclude_max=True),
    st.just(math.nan),
    st.just(math.inf),
    st.just(3e11),
    st.integers(0, 10**12),
    st.text(max_size=3),
)
_base = st.fixed_dictionaries(
    {
        "event_id": _ids,
        "entity": _ids,
        "ts": _times,
        "data": st.one_of(
            st.dictionaries(_keys, _values, max_size=4),
            st.dictionaries(_keys, _values, max_size=4),
            st.lists(st.integers(0, 9), max_size=2),
        ),
    },
    optional={"label": _values},
)
event_like_dicts = st.one_of(_base, _base, _base.map(lambda e: {**e, "extra": 1}))
"""Event-shaped dicts, mostly well-formed: what a fast path accepts is exercised as much as
what it refuses (NaN, infinities, huge ints, long strings, bad ids, unknown fields)."""

_lineages = st.fixed_dictionaries(
    {
        "topic": st.one_of(st.text(min_size=1, max_size=5), st.just(""), st.integers(0, 3)),
        "partition": st.one_of(st.integers(0, 2**64 - 1), st.integers(-3, -1), st.booleans()),
        "offset": st.one_of(st.integers(0, 2**64 - 1), st.integers(-2, -1), st.floats(0, 9)),
    }
)
_features_base = st.fixed_dictionaries(
    {
        "event": event_like_dicts,
        "features": st.one_of(
            st.dictionaries(_keys, _values, max_size=4),
            st.dictionaries(_keys, _values, max_size=4),
            st.lists(st.integers(0, 9), max_size=2),
        ),
        "late_windows": st.one_of(
            st.lists(st.text(max_size=3), max_size=2),
            st.lists(st.text(max_size=3), max_size=2),
            st.lists(st.integers(0, 3), min_size=1, max_size=1),
            st.just("1m"),
        ),
        "lineage": st.one_of(_lineages, _lineages, _lineages.map(lambda m: {**m, "x": 1})),
    }
)
features_like_dicts = st.one_of(
    _features_base, _features_base, _features_base.map(lambda r: {**r, "extra": 1})
)
"""features/v1-shaped dicts, mostly well-formed, with the same defects as events'."""
