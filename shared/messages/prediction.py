"""prediction/v1 (schemas/prediction.v1.json)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import msgspec

from shared.messages.errors import MessageError
from shared.messages.fields import (
    Scalar,
    check_fields,
    finite_number,
    id_string,
    label_value,
    non_negative_int,
    require_mapping,
    timestamp,
)
from shared.messages.lineage import Lineage

TASKS = ("binary", "multiclass", "regression")


class Prediction(msgspec.Struct, frozen=True):
    KIND: ClassVar[str] = "prediction/v1"
    REQUIRED: ClassVar[tuple[str, ...]] = (
        "event_id",
        "entity",
        "ts",
        "pipeline",
        "model",
        "model_version",
        "task",
        "prediction",
        "proba",
        "lineage",
    )
    OPTIONAL: ClassVar[tuple[str, ...]] = ()

    event_id: str
    entity: str
    ts: float
    pipeline: str
    model: str
    model_version: int
    task: str
    prediction: Scalar
    proba: tuple[tuple[Scalar, float], ...] | None
    lineage: Lineage

    def to_wire(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "entity": self.entity,
            "ts": self.ts,
            "pipeline": self.pipeline,
            "model": self.model,
            "model_version": self.model_version,
            "task": self.task,
            "prediction": self.prediction,
            "proba": None if self.proba is None else [[c, p] for c, p in self.proba],
            "lineage": self.lineage.to_wire(),
        }

    @classmethod
    def from_wire(cls, obj: Any) -> Prediction:
        m = require_mapping(obj, cls.KIND)
        check_fields(m, cls.KIND, cls.REQUIRED, _FIELDS)
        return cls(**scored_fields(m))


def scored_fields(m: Mapping[str, Any]) -> dict[str, Any]:
    """The fields prediction/v1 and outcome/v1 share (what was scored, by which model, and
    what it said), each checked."""
    for name in ("pipeline", "model"):
        if not isinstance(m[name], str) or not m[name]:
            raise MessageError("wrong_type", f"{name} must be a non-empty string")
    if m["task"] not in TASKS:
        raise MessageError("bad_value", f"task must be one of {TASKS}, got {m['task']!r}")
    prediction = m["prediction"]
    if prediction is not None and not isinstance(prediction, str):
        prediction = label_value(prediction, "prediction", nullable=True)
    return {
        "event_id": id_string(m["event_id"], "event_id"),
        "entity": id_string(m["entity"], "entity"),
        "ts": timestamp(m["ts"], "ts"),
        "pipeline": m["pipeline"],
        "model": m["model"],
        "model_version": non_negative_int(m["model_version"], "model_version"),
        "task": m["task"],
        "prediction": prediction,
        "proba": proba_pairs(m["proba"]),
        "lineage": Lineage.from_wire(m["lineage"]),
    }


def proba_pairs(value: Any) -> tuple[tuple[Scalar, float], ...] | None:
    if value is None:
        return None
    if not isinstance(value, list | tuple):
        raise MessageError("wrong_type", "proba must be a list of [label, probability] pairs")
    pairs = []
    for i, pair in enumerate(value):
        if not isinstance(pair, list | tuple) or len(pair) != 2:
            raise MessageError("wrong_type", f"proba[{i}] must be a [label, probability] pair")
        label, p = pair
        if label is None or not isinstance(label, str | bool | int | float):
            raise MessageError("wrong_type", f"proba[{i}][0] must be a number, string or boolean")
        p = finite_number(p, f"proba[{i}][1]")
        if not 0 <= p <= 1:
            raise MessageError("bad_value", f"proba[{i}][1] must be within [0, 1], got {p}")
        pairs.append((label, float(p)))
    return tuple(pairs)


_FIELDS = frozenset(Prediction.REQUIRED + Prediction.OPTIONAL)
