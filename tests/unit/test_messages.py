import math

import msgpack
import pytest
from hypothesis import given, settings

from shared.codec import CodecError, decode, encode
from shared.messages import Event, Label, Lineage, MessageError, Outcome, Prediction
from shared.messages.fast_event import fast_event, fast_valid_event
from shared.messages.fast_features import fast_features_event
from shared.messages.features import FeatureRecord
from shared.messages.scoring_input import scoring_event
from tests.unit.strategies import event_like_dicts, features_like_dicts


def event(**over):
    base = {"event_id": "e1", "entity": "u1", "ts": 10.5, "data": {"x": 1.0, "s": "a", "b": True}}
    base.update(over)
    return base


def test_event_round_trip():
    ev = Event.from_wire(event(label=True))
    assert ev.label is True
    assert Event.from_wire(ev.to_wire()) == ev
    assert "label" not in ev.without_label().to_wire()


@pytest.mark.parametrize(
    ("record", "reason", "field"),
    [
        ([1, 2], "not_an_object", "event/v1"),
        ({"entity": "u", "ts": 1, "data": {}}, "missing_field", "event_id"),
        (event(extra=1), "unknown_field", "extra"),
        (event(event_id=""), "bad_value", "event_id"),
        (event(event_id=5), "wrong_type", "event_id"),
        (event(ts="yesterday"), "wrong_type", "ts"),
        (event(ts=-1), "bad_value", "ts"),
        (event(ts=float("nan")), "non_finite", "ts"),
        (event(data={"x": float("inf")}), "non_finite", "data.x"),
        (event(data={"x": [1]}), "wrong_type", "data.x"),
        (event(data={"x": {"y": 1}}), "wrong_type", "data.x"),
        (event(data={"": 1}), "bad_value", "data"),
        (event(data=[1]), "wrong_type", "data"),
        (event(label=[1]), "wrong_type", "label"),
        (event(entity="u" * 300), "too_long", "entity"),
    ],
)
def test_event_errors_name_the_field(record, reason, field):
    with pytest.raises(MessageError) as info:
        Event.from_wire(record)
    assert info.value.reason == reason
    assert field in str(info.value)


def test_label_requires_a_value():
    with pytest.raises(MessageError, match="label must not be null"):
        Label.from_wire({"event_id": "e", "entity": "u", "ts": 1, "label": None})
    label = Label.from_wire({"event_id": "e", "entity": "u", "ts": 1, "label": "spam"})
    assert Label.from_wire(label.to_wire()) == label


def test_prediction_round_trip_and_proba_checks():
    p = Prediction(
        "e",
        "u",
        1.0,
        "p",
        "m",
        0,
        "binary",
        True,
        ((True, 0.8), (False, 0.2)),
        Lineage("events", 0, 7),
    )
    assert Prediction.from_wire(p.to_wire()) == p
    wire = p.to_wire()
    wire["proba"] = [[True, 1.5]]
    with pytest.raises(MessageError, match=r"proba\[0\]\[1\]"):
        Prediction.from_wire(wire)
    wire["proba"] = None
    wire["task"] = "ranking"
    with pytest.raises(MessageError, match="task"):
        Prediction.from_wire(wire)


@settings(max_examples=3000, deadline=None)
@given(event_like_dicts)
def test_what_the_learners_fast_path_accepts_the_full_route_reads_alike(obj):
    """The learner decodes events.valid with the shared msgspec fast path; whatever it
    accepts, decode + Event.from_wire must accept and read the same."""
    raw = msgpack.packb(obj, use_bin_type=True)
    fast = fast_event(raw, math.inf)
    got = fast_valid_event(raw, len(raw))
    assert (got is None) == (fast is None)  # the learner's route decides alike
    try:
        event = Event.from_wire(decode(raw))
    except (CodecError, MessageError):
        assert fast is None
        return
    if fast is not None:
        assert got is not None
        assert got == event
        assert [type(v) for v in got.data.values()] == [type(v) for v in event.data.values()]
        assert type(got.label) is type(event.label)


@settings(max_examples=3000, deadline=None)
@given(features_like_dicts)
def test_what_the_features_fast_path_accepts_the_full_route_reads_alike(obj):
    """The learner and the scorers decode features/v1 with a msgspec fast path; whatever it
    accepts, decode + scoring_event must accept and read the same."""
    raw = msgpack.packb(obj, use_bin_type=True)
    fast = fast_features_event(raw, len(raw))
    try:
        full = scoring_event(decode(raw), from_features=True)
    except (CodecError, MessageError):
        assert fast is None
        return
    if fast is not None:
        event, lineage = fast
        assert (event, lineage) == full
        assert [type(v) for v in event.data.values()] == [type(v) for v in full[0].data.values()]
        assert type(event.label) is type(full[0].label)


def test_the_features_fast_path_takes_a_record_the_features_service_writes():
    event = Event("e1", "u1", 1.5, {"x": 1, "s": "a"}, True)
    record = FeatureRecord(event, {"x_mean_1m": 1.0, "n": None}, (), Lineage("events.valid", 1, 9))
    raw = encode(record)
    assert fast_features_event(raw, len(raw)) == (
        Event("e1", "u1", 1.5, {"x_mean_1m": 1.0, "n": None}, True),
        Lineage("events.valid", 1, 9),
    )
    assert fast_features_event(raw, len(raw) - 1) is None  # over the size limit: full route


@pytest.mark.parametrize(
    "proba", [((False, 0.25), (True, 0.75)), None, (("a", 0.1), ("b", 0.9)), ((1, 1.0),)]
)
def test_predictions_and_outcomes_encode_as_their_wire_form(proba):
    """The learner encodes these Structs directly; the bytes must be their to_wire() ones."""
    lineage = Lineage("events.valid", 3, 2**40)
    p = Prediction("e1", "u1", 1.5, "p", "m", 7, "binary", True, proba, lineage)
    o = Outcome("e1", "u1", 1.5, "p", "m", 7, "binary", True, proba, False, "topic", 5, lineage)
    assert encode(p) == encode(p.to_wire())
    assert encode(o) == encode(o.to_wire())
    assert Prediction.from_wire(decode(encode(p))) == p


@pytest.mark.parametrize("label", [None, False, True, 0.0, 2.5, "spam"])
def test_events_and_feature_records_encode_as_their_wire_form(label):
    """The features service encodes these Structs directly; a null label is left out."""
    event = Event("e1", "u1", 1.5, {"x": 1, "s": "a", "b": False, "n": None}, label)
    assert encode(event) == encode(event.to_wire())
    record = FeatureRecord(
        event, {"x_mean_1m": 1.0, "x_min_1m": None}, ("1m",), Lineage("events.valid", 1, 9)
    )
    assert encode(record) == encode(record.to_wire())
    assert FeatureRecord.from_wire(decode(encode(record))) == record


@pytest.mark.parametrize("single_float", [False, True])
def test_the_fast_paths_refuse_a_long_key_in_the_smallest_record_that_can_hold_one(single_float):
    """The fast paths scan key lengths only in records long enough to hold a long key."""
    from shared.messages.fields import MAX_ID_LEN

    obj = {"event_id": "e", "entity": "u", "ts": 0.5, "data": {"k" * (MAX_ID_LEN + 1): None}}
    raw = msgpack.packb(obj, use_single_float=single_float)
    assert fast_event(raw, math.inf) is None
    assert fast_valid_event(raw, len(raw)) is None
    obj["data"] = {"k" * MAX_ID_LEN: None}
    raw = msgpack.packb(obj, use_single_float=single_float)
    assert fast_event(raw, math.inf) is not None
    assert fast_valid_event(raw, len(raw)) is not None
