"""The code's message types and the JSON Schema files in schemas/ must agree."""

import dataclasses

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.messages import (
    DeadLetter,
    DriftAlert,
    Event,
    FeatureRecord,
    Label,
    Lineage,
    MessageError,
    ModelEvent,
    Outcome,
    Prediction,
)
from shared.schemas import load_schema, schemas_dir, validator

TYPES = [Event, Label, Prediction, Outcome, DeadLetter, FeatureRecord, DriftAlert, ModelEvent]


def test_every_schema_file_is_a_valid_schema_and_has_a_type():
    kinds = {t.KIND for t in TYPES} | {"pipeline-spec/v1"}
    files = {p.name for p in schemas_dir().glob("*.json")}
    assert files == {k.replace("/", ".") + ".json" for k in kinds}
    for kind in kinds:
        validator(kind)  # check_schema raises on an invalid schema


@pytest.mark.parametrize("cls", TYPES, ids=lambda c: c.KIND)
def test_field_sets_agree(cls):
    schema = load_schema(cls.KIND)
    assert set(schema["required"]) == set(cls.REQUIRED)
    assert set(schema["properties"]) == set(cls.REQUIRED) | set(cls.OPTIONAL)
    assert schema["additionalProperties"] is False
    assert set(field_names(cls)) == set(schema["properties"])


def test_lineage_agrees_with_the_prediction_schema():
    lineage = load_schema("prediction/v1")["$defs"]["lineage"]
    assert set(lineage["required"]) == set(field_names(Lineage))


def field_names(cls: type) -> list[str]:
    """Message classes are dataclasses, or msgspec Structs where encoding speed matters."""
    if issubclass(cls, msgspec.Struct):
        return list(cls.__struct_fields__)
    return [f.name for f in dataclasses.fields(cls)]


def test_code_outputs_validate_against_their_schemas():
    p = Prediction(
        "e", "u", 1.0, "p", "m", 3, "multiclass", "a", (("a", 0.5), ("b", 0.5)), Lineage("t", 0, 1)
    )
    validator("prediction/v1").validate(p.to_wire())
    d = DeadLetter.of("events", 0, 4, "bad_json", "invalid JSON", "learner", b"{")
    validator("dlq/v1").validate({**d.to_wire(), "original": "{"})  # JSON has no bytes
    validator("event/v1").validate(Event("e", "u", 0.0, {"x": 1}, "y").to_wire())
    validator("label/v1").validate(Label("e", "u", 0.0, 2.5).to_wire())
    record = FeatureRecord(
        Event("e", "u", 1.0, {"x": 1}),
        {"x_mean_1m": 1.0, "x_min_1m": None},
        ("1m",),
        Lineage("events", 0, 3),
    )
    validator("features/v1").validate(record.to_wire())
    assert FeatureRecord.from_wire(record.to_wire()) == record
    bad = {**record.to_wire(), "event": {"event_id": "e"}}
    assert not validator("features/v1").is_valid(bad)
    o = Outcome(
        "e",
        "u",
        1.0,
        "p",
        "m",
        2,
        "binary",
        True,
        ((False, 0.25), (True, 0.75)),
        False,
        "topic",
        4,
        Lineage("features", 0, 9),
    )
    validator("outcome/v1").validate(o.to_wire())
    assert Outcome.from_wire(o.to_wire()) == o
    with pytest.raises(MessageError, match="label_source must be one of"):
        Outcome.from_wire({**o.to_wire(), "label_source": "guess"})
    with pytest.raises(MessageError, match="label must not be null"):
        Outcome.from_wire({**o.to_wire(), "label": None})
    alert = DriftAlert(
        "a1",
        "p",
        None,
        None,
        "covariate",
        "x",
        "ks_2samp",
        {"p_value": 1e-9},
        "e",
        2.0,
        "none",
        Lineage("features", 1, 7),
    )
    validator("drift-alert/v1").validate(alert.to_wire())
    assert DriftAlert.from_wire(alert.to_wire()) == alert
    assert not validator("drift-alert/v1").is_valid({**alert.to_wire(), "kind": "mystery"})
    with pytest.raises(MessageError, match="kind must be one of"):
        DriftAlert.from_wire({**alert.to_wire(), "kind": "mystery"})


# Differential test: random records are accepted by the code exactly when the schema accepts them.
keys = st.sampled_from(["event_id", "entity", "ts", "data", "label", "extra", ""])
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=5),
    st.sampled_from(["", "x" * 257]),
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=6,
)
good_ish = st.fixed_dictionaries(
    {
        "event_id": st.one_of(st.text(min_size=0, max_size=4), scalars),
        "entity": st.one_of(st.text(min_size=0, max_size=4), scalars),
        "ts": st.one_of(st.floats(-10, 1e10, allow_nan=False), scalars),
        "data": st.one_of(st.dictionaries(st.text(max_size=4), values, max_size=4), values),
    },
    optional={"label": values, "extra": values},
)
records = st.one_of(good_ish, st.dictionaries(keys, values, max_size=6), values)


def code_accepts(cls, record) -> bool:
    try:
        cls.from_wire(record)
    except MessageError:
        return False
    return True


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records)
def test_event_validation_matches_the_schema(record):
    assert code_accepts(Event, record) == validator("event/v1").is_valid(record)


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.fixed_dictionaries(
            {
                "event_id": st.one_of(st.text(max_size=3), scalars),
                "entity": st.text(max_size=3),
                "ts": st.one_of(st.floats(-1, 10, allow_nan=False), scalars),
                "label": values,
            },
            optional={"extra": values},
        ),
        st.dictionaries(keys, values, max_size=5),
    )
)
def test_label_validation_matches_the_schema(record):
    assert code_accepts(Label, record) == validator("label/v1").is_valid(record)
