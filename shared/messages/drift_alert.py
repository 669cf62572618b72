"""drift-alert/v1 (schemas/drift-alert.v1.json): what the monitor found, where and when."""

from __future__ import annotations

import hashlib
from typing import Any, ClassVar

import msgspec

from shared.messages.errors import MessageError
from shared.messages.fields import (
    check_fields,
    id_string,
    non_negative_int,
    require_mapping,
    statistics,
    timestamp,
)
from shared.messages.lineage import Lineage

DRIFT_KINDS = ("concept", "covariate", "prediction")
ACTIONS = ("none", "reset", "fallback")  # what the learner did (the spec's drift.reaction)


def alert_id(pipeline: str, model: str | None, kind: str, signal: str, event_id: str) -> str:
    """The same detection always gets the same id, so a replayed or re-emitted alert is
    recognised as the one already seen."""
    text = "\x1f".join((pipeline, model or "", kind, signal, event_id))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


class DriftAlert(msgspec.Struct, frozen=True):
    KIND: ClassVar[str] = "drift-alert/v1"
    REQUIRED: ClassVar[tuple[str, ...]] = (
        "alert_id",
        "pipeline",
        "model",
        "model_version",
        "kind",
        "signal",
        "detector",
        "statistics",
        "event_id",
        "ts",
        "action",
        "lineage",
    )
    OPTIONAL: ClassVar[tuple[str, ...]] = ()

    alert_id: str
    pipeline: str
    model: str | None  # None for covariate drift: it is about the inputs, not a model
    model_version: int | None
    kind: str
    signal: str  # "error", "prediction", or the feature's name
    detector: str
    statistics: dict[str, float]
    event_id: str  # the record at which the drift was detected
    ts: float
    action: str
    lineage: Lineage  # that record's position on its topic

    def to_wire(self) -> dict[str, Any]:
        return {
            "alert_id": self.alert_id,
            "pipeline": self.pipeline,
            "model": self.model,
            "model_version": self.model_version,
            "kind": self.kind,
            "signal": self.signal,
            "detector": self.detector,
            "statistics": dict(self.statistics),
            "event_id": self.event_id,
            "ts": self.ts,
            "action": self.action,
            "lineage": self.lineage.to_wire(),
        }

    @classmethod
    def from_wire(cls, obj: Any) -> DriftAlert:
        m = require_mapping(obj, cls.KIND)
        check_fields(m, cls.KIND, cls.REQUIRED, _FIELDS)
        for name in ("alert_id", "pipeline", "signal", "detector"):
            if not isinstance(m[name], str) or not m[name]:
                raise MessageError("wrong_type", f"{name} must be a non-empty string")
        model, version = m["model"], m["model_version"]
        if model is not None and (not isinstance(model, str) or not model):
            raise MessageError("wrong_type", "model must be a non-empty string or null")
        if m["kind"] not in DRIFT_KINDS:
            raise MessageError("bad_value", f"kind must be one of {DRIFT_KINDS}, got {m['kind']!r}")
        if m["action"] not in ACTIONS:
            raise MessageError("bad_value", f"action must be one of {ACTIONS}")
        return cls(
            alert_id=m["alert_id"],
            pipeline=m["pipeline"],
            model=model,
            model_version=None if version is None else non_negative_int(version, "model_version"),
            kind=m["kind"],
            signal=m["signal"],
            detector=m["detector"],
            statistics=statistics(m["statistics"], "statistics"),
            event_id=id_string(m["event_id"], "event_id"),
            ts=timestamp(m["ts"], "ts"),
            action=m["action"],
            lineage=Lineage.from_wire(m["lineage"]),
        )


_FIELDS = frozenset(DriftAlert.REQUIRED + DriftAlert.OPTIONAL)
