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
)
from shared.messages.lineage import Lineage
from shared.messages.prediction import scored_fields

LABEL_SOURCES = ("inline", "topic", "default")


class Outcome(msgspec.Struct, frozen=True):
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
    label: Scalar
    label_source: str  # inline | topic | default
    label_lag_events: int
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
            "label": self.label,
            "label_source": self.label_source,
            "label_lag_events": self.label_lag_events,
            "lineage": self.lineage.to_wire(),
        }

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
        )


_FIELDS = frozenset(Outcome.REQUIRED + Outcome.OPTIONAL)
