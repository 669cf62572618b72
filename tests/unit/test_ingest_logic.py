"""Ingest's pure logic: normalisation under each policy, the dedupe window, reason codes."""

from __future__ import annotations

import json
import math
import pickle
import re
from pathlib import Path
from unittest import mock

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.ingest import dedupe
from services.ingest.dedupe import RecentIds
from services.ingest.normalize import normalise_event, normalise_label, parse_time
from shared.codec import CodecError, decode, encode
from shared.messages import Event, MessageError
from shared.spec import IngestPolicy
from tests.unit.strategies import event_like_dicts

ROOT = Path(__file__).resolve().parents[2]
T = 1_795_255_200.0  # 2026-11-21T10:00:00Z
GOOD = {"event_id": "e1", "entity": "u1", "ts": T, "data": {"x": 1.5, "s": "a", "b": True}}
DEFAULT = IngestPolicy()


def reason(obj, policy: IngestPolicy = DEFAULT) -> str:
    with pytest.raises(MessageError) as info:
        normalise_event(obj, policy)
    return info.value.reason


def test_a_well_formed_event_passes_unchanged():
    event, changed = normalise_event(dict(GOOD), DEFAULT)
    assert event == Event("e1", "u1", T, GOOD["data"], None)
    assert not changed


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-21T10:00:00Z", T),
        ("2026-11-21T10:00:00+00:00", T),
        ("2026-11-21T12:00:00+02:00", T),
        ("2026-11-21T10:00:00", T),  # no offset: UTC
        ("2026-11-21T10:00:00.250Z", T + 0.25),
        ("2026-11-21", T - 36_000),
    ],
)
def test_iso_times_become_utc_epoch_seconds(text, expected):
    event, changed = normalise_event({**GOOD, "ts": text}, DEFAULT)
    assert event.ts == expected
    assert changed
    assert parse_time(text) == expected


def test_integer_times_are_written_back_as_floats():
    event, changed = normalise_event({**GOOD, "ts": 1_795_255_200}, DEFAULT)
    assert event.ts == T
    assert type(event.ts) is float
    assert changed


@pytest.mark.parametrize("ts", ["yesterday", "2026-13-01T00:00:00Z", "x" * 100, ""])
def test_unreadable_times_are_bad_values(ts):
    assert reason({**GOOD, "ts": ts}) == "bad_value"


def test_times_past_year_9999_and_negative_are_refused():
    assert reason({**GOOD, "ts": 1e300}) == "bad_value"
    assert reason({**GOOD, "ts": -1.0}) == "bad_value"


def test_unknown_fields_are_refused_by_default_and_dropped_when_asked():
    assert reason({**GOOD, "lable": True}) == "unknown_field"  # a typo must not pass silently
    event, changed = normalise_event({**GOOD, "lable": True}, IngestPolicy(unknown_fields="drop"))
    assert event == Event("e1", "u1", T, GOOD["data"], None)
    assert changed


def test_non_finite_data_is_missing_by_default_and_refused_when_asked():
    for bad in (math.nan, math.inf, -math.inf):
        event, changed = normalise_event({**GOOD, "data": {"x": bad, "y": 2.0}}, DEFAULT)
        assert event.data == {"x": None, "y": 2.0}
        assert changed
        strict = IngestPolicy(non_finite="reject")
        assert reason({**GOOD, "data": {"x": bad}}, strict) == "non_finite"


def test_non_finite_time_or_label_is_always_refused():
    assert reason({**GOOD, "ts": math.nan}) == "non_finite"
    assert reason({**GOOD, "label": math.inf}) == "non_finite"


def test_the_specs_entity_field_becomes_entity():
    policy = IngestPolicy(entity_field="user_id")
    raw = {k: v for k, v in GOOD.items() if k != "entity"} | {"user_id": "u9"}
    event, _ = normalise_event(raw, policy)
    assert event.entity == "u9"
    assert reason(raw) == "missing_field"  # without the spec saying so, it is missing


def test_labels_are_normalised_the_same_way():
    label, changed = normalise_label(
        {"event_id": "e1", "entity": "u1", "ts": "2026-11-21T10:00:00Z", "label": True}, DEFAULT
    )
    assert (label.ts, label.label, changed) == (T, True, True)
    with pytest.raises(MessageError) as info:
        normalise_label({"event_id": "e1", "entity": "u1", "ts": T}, DEFAULT)
    assert info.value.reason == "missing_field"


# -- deduplication ---------------------------------------------------------------------


def test_a_repeat_within_the_horizon_is_seen():
    ids = RecentIds(horizon_s=60, max_ids=100)
    assert not ids.seen("a", T)
    assert not ids.seen("b", T + 30)
    assert ids.seen("a", T)
    assert ids.seen("b", T + 30)


def test_ids_older_than_the_horizon_are_forgotten():
    ids = RecentIds(horizon_s=60, max_ids=100)
    ids.seen("a", T)
    ids.seen("b", T + 61)
    assert len(ids) == 1
    assert not ids.seen("a", T)  # forgotten: counted as new
    assert ids.forgotten == 1


def test_memory_is_capped_whatever_the_horizon():
    ids = RecentIds(horizon_s=1e9, max_ids=1000)
    for i in range(10_000):
        ids.seen(f"e{i}", T)
    assert len(ids) == 1000
    assert ids.seen("e9999", T)
    assert not ids.seen("e0", T)


def test_a_late_old_event_does_not_empty_the_window():
    ids = RecentIds(horizon_s=60, max_ids=100)
    ids.seen("new", T + 1000)
    assert not ids.seen("old", T)  # older than the horizon on arrival
    assert ids.seen("new", T + 1000)


# -- reason codes ----------------------------------------------------------------------

HOSTILE: dict[str, bytes | None] = {
    "empty": b"",
    "too_large": b"\x81" + msgpack.packb("x") + msgpack.packb("y" * 2_000_000),
    "bad_msgpack": b"\xc1\x00",
    "bad_json": b'{"event_id": ',
    "not_an_object": encode([1, 2, 3]),
    "missing_field": encode({"event_id": "e", "entity": "u", "ts": T}),
    "unknown_field": encode({**GOOD, "extra": 1}),
    "wrong_type": encode({**GOOD, "entity": 7}),
    "bad_value": encode({**GOOD, "ts": -5.0}),
    "non_finite": encode({**GOOD, "ts": math.inf}),
    "too_long": encode({**GOOD, "event_id": "e" * 300}),
}


@pytest.mark.parametrize(("code", "payload"), HOSTILE.items())
def test_each_ingest_reason_code_has_an_input_that_yields_it(code, payload):
    with pytest.raises((CodecError, MessageError)) as info:
        normalise_event(decode(payload, 1_048_576, json_constants=True), DEFAULT)
    assert info.value.reason == code


def documented_codes() -> set[str]:
    """The first column of the README's dead-letter table."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("### Dead letters", 1)[1].split("\n## ", 1)[0]
    codes: set[str] = set()
    for line in section.splitlines():
        if line.startswith("| `"):
            codes.update(re.findall(r"`([a-z_]+)`", line.split("|")[1]))
    return codes


def codes_in_code() -> set[str]:
    found: set[str] = set()
    for path in [*ROOT.glob("shared/**/*.py"), *ROOT.glob("services/**/*.py")]:
        text = path.read_text()
        found.update(re.findall(r'(?:MessageError|CodecError)\(\s*"([a-z_]+)"', text))
        found.update(re.findall(r'(?:dead_letter|_reject)\([^)]*?"([a-z_]+_error)"', text, re.S))
        found.update(re.findall(r'\(FAILED, "([a-z_]+)"', text))  # the learner's model worker
    return found


def test_every_reason_code_in_the_code_is_documented_and_vice_versa():
    in_code = codes_in_code()
    assert {"bad_msgpack", "model_error", "feature_error"} <= in_code  # the scan works
    assert in_code == documented_codes()


def test_json_nan_is_a_codec_error_outside_ingest():
    with pytest.raises(CodecError):
        decode(json.dumps({"x": math.nan}).encode())
    assert math.isnan(decode(json.dumps({"x": math.nan}).encode(), json_constants=True)["x"])


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 60), st.floats(0, 500, allow_nan=False)), max_size=120),
    st.integers(1, 30),
    st.floats(1, 200),
)
def test_a_window_restored_at_any_point_answers_as_the_original(arrivals, max_ids, horizon):
    """Checkpointed (pickled) after every arrival, with tiny segments so that sealing and
    dropping segments happen often: the copy holds the same ids in the same order and gives
    the same answers for the rest of the stream."""
    with mock.patch.object(dedupe, "SEGMENT", 4):
        reference = RecentIds(horizon, max_ids)
        answers = [reference.seen(f"e{k}", ts) for k, ts in arrivals]
        original = RecentIds(horizon, max_ids)
        for i, (k, ts) in enumerate(arrivals):
            copy = pickle.loads(pickle.dumps(original))
            assert list(copy.ids.items()) == list(original.ids.items())
            assert list(copy._order) == list(copy.ids)  # the eviction order, rebuilt
            assert [copy.seen(f"e{n}", t) for n, t in arrivals[i:]] == answers[i:]
            original.seen(f"e{k}", ts)
        assert list(original._order) == list(original.ids)


# -- the msgspec fast path agrees with the full route ----------------------------------

_events = event_like_dicts


@settings(max_examples=3000, deadline=None)
@given(_events)
def test_what_the_fast_path_accepts_the_full_route_accepts_unchanged(obj):
    from services.ingest.fast_path import fast_event

    raw = msgpack.packb(obj, use_bin_type=True)
    fast = fast_event(raw)
    try:
        event, changed = normalise_event(decode(raw), DEFAULT)
    except (CodecError, MessageError):
        assert fast is None
        return
    if fast is not None:
        assert not changed
        assert (fast.event_id, fast.entity, fast.ts, fast.data, fast.label) == (
            event.event_id,
            event.entity,
            event.ts,
            event.data,
            event.label,
        )


def agree(obj) -> bool:
    """The fast path and the full route agree on `obj`; True if the fast path took it."""
    from services.ingest.fast_path import fast_event

    raw = msgpack.packb(obj, use_bin_type=True)
    fast = fast_event(raw)
    try:
        event, changed = normalise_event(decode(raw), DEFAULT)
    except (CodecError, MessageError):
        assert fast is None, obj
        return False
    if fast is None:
        return False
    assert not changed, obj
    got = (fast.event_id, fast.entity, fast.ts, fast.data, fast.label)
    assert got == (event.event_id, event.entity, event.ts, event.data, event.label), obj
    return True


def test_fast_path_agreement_on_mostly_valid_records():
    """Seeded sampling near the valid region, where a wrong acceptance would hide."""
    import random

    rng = random.Random(5)
    edge_values = [math.nan, math.inf, -math.inf, 2**64 - 1, -(2**63), "v" * 65_536, "v" * 65_537]
    accepted = 0
    for i in range(20_000):
        data = {
            f"k{j}": rng.choice([rng.random(), j, True, None, "s"]) for j in range(rng.randrange(4))
        }
        if rng.random() < 0.3:
            data[rng.choice(["k", "", "k" * 256, "k" * 257])] = rng.choice(edge_values)
        ts = rng.choice(
            [rng.uniform(0, 2e11), 2.534e11 - 1, 253_402_300_800.0, 1e12, 5, -0.5, math.nan]
        )
        event = {
            "event_id": rng.choice(["e", "e" * 256, "e" * 257]),
            "entity": f"u{i}",
            "ts": ts,
            "data": data,
        }
        if rng.random() < 0.3:
            event["label"] = rng.choice([True, 0.5, 3, "cat", "", math.nan, None])
        accepted += agree(event)
    assert accepted > 2_000  # the acceptance side was exercised


def test_the_fast_path_takes_the_common_record():
    from services.ingest.fast_path import fast_event

    assert fast_event(encode(GOOD)) is not None
    assert fast_event(json.dumps(GOOD).encode()) is None  # JSON: the full route
    assert fast_event(encode({**GOOD, "ts": 1_795_255_200})) is None  # rewritten as a float
    bad_utf8 = encode({**GOOD, "entity": "u1"}).replace(b"\xa2u1", b"\xa2\x97\x98")
    assert fast_event(bad_utf8) is None  # declined, not raised: the full route names it
    with pytest.raises(CodecError):
        decode(bad_utf8)
