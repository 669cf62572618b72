"""outcome/v1: a prediction joined with its true label (schemas/outcome.v1.json)."""

from __future__ import annotations

from typing import Any, ClassVar

import msgspec

from shared.messages.errors import MessageError
from shared.messages.fields import (
    Scalar,
    check_fields,
    label_value,
    non_negative_int,
    require_mapping,
    statistics,
)
from shared.messages.lineage import Lineage
from shared.messages.prediction import scored_fields

LABEL_SOURCES = ("inline", "topic", "default")
REACTIONS = ("reset", "fallback")


class Reaction(msgspec.Struct, frozen=True):
    """The learner detected concept drift in the model's errors at this outcome and
    reacted (the spec's drift.reaction); the monitor publishes it as the alert."""

    detector: str
    action: str  # reset | fallback
    statistics: dict[str, float]

    def to_wire(self) -> dict[str, Any]:
        return {
            "detector": self.detector,
            "action": self.action,
            "statistics": dict(self.statistics),
        }

    @classmethod
    def from_wire(cls, obj: Any) -> Reaction:
        m = require_mapping(obj, "reaction")
        check_fields(m, "reaction", ("detector", "action", "statistics"), _REACTION_FIELDS)
        if not isinstance(m["detector"], str) or not m["detector"]:
            raise MessageError("wrong_type", "reaction.detector must be a non-empty string")
        if m["action"] not in REACTIONS:
            raise MessageError("bad_value", f"reaction.action must be one of {REACTIONS}")
        return cls(m["detector"], m["action"], statistics(m["statistics"], "reaction.statistics"))


_REACTION_FIELDS = frozenset(("detector", "action", "statistics"))


class Outcome(msgspec.Struct, frozen=True, omit_defaults=True):
    KIND: ClassVar[str] = "outcome/v1"
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
        "label",
        "label_source",
        "label_lag_events",
        "lineage",
    )
    OPTIONAL: ClassVar[tuple[str, ...]] = ("reaction",)

    event_id: str
    entity: str
    ts: float
    pipeline: str
    model: str
    model_version: int
    task: str
    prediction: Scalar
    proba: tuple[tuple[Scalar, float], ...] | None
    label: Scalar
    label_source: str  # inline | topic | default
    label_lag_events: int
    lineage: Lineage
    reaction: Reaction | None = None  # absent unless the learner reacted here

    def to_wire(self) -> dict[str, Any]:
        wire = {
            "event_id": self.event_id,
            "entity": self.entity,
            "ts": self.ts,
            "pipeline": self.pipeline,
            "model": self.model,
            "model_version": self.model_version,
            "task": self.task,
            "prediction": self.prediction,
            "proba": None if self.proba is None else [[c, p] for c, p in self.proba],
            "label": self.label,
            "label_source": self.label_source,
            "label_lag_events": self.label_lag_events,
            "lineage": self.lineage.to_wire(),
        }
        if self.reaction is not None:
            wire["reaction"] = self.reaction.to_wire()
        return wire

    @classmethod
    def from_wire(cls, obj: Any) -> Outcome:
        """For readers of the outcomes topic (the monitor): every field checked."""
        m = require_mapping(obj, cls.KIND)
        check_fields(m, cls.KIND, cls.REQUIRED, _FIELDS)
        if m["label_source"] not in LABEL_SOURCES:
            raise MessageError("bad_value", f"label_source must be one of {LABEL_SOURCES}")
        label = m["label"]
        if not isinstance(label, str):
            label = label_value(label, "label", nullable=False)
        return cls(
            **scored_fields(m),
            label=label,
            label_source=m["label_source"],
            label_lag_events=non_negative_int(m["label_lag_events"], "label_lag_events"),
            reaction=None if m.get("reaction") is None else Reaction.from_wire(m["reaction"]),
        )


_FIELDS = frozenset(Outcome.REQUIRED + Outcome.OPTIONAL)
