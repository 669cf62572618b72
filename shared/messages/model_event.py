"""model-event/v1 (schemas/model-event.v1.json): a rollout decision, the paired test's or an
operator's, on the model-events topic, keyed by pipeline."""

from __future__ import annotations

from typing import Any, ClassVar

import msgspec

from shared.messages.lineage import Lineage

KINDS = ("promote", "retire", "rollback", "confirm", "switch", "set")


class ModelEvent(msgspec.Struct, frozen=True):
    KIND: ClassVar[str] = "model-event/v1"
    REQUIRED: ClassVar[tuple[str, ...]] = (
        "pipeline",
        "seq",
        "kind",
        "source",
        "champion",
        "challenger",
        "policy",
        "share",
        "previous",
        "phase",
        "evidence",
        "event_id",
        "ts",
        "model_version",
        "lineage",
    )
    OPTIONAL: ClassVar[tuple[str, ...]] = ()

    pipeline: str
    seq: int  # the pipeline's decisions so far, this one included
    kind: str
    source: str  # "test" (the paired test decided) or "operator"
    champion: str  # after the decision
    challenger: str | None
    policy: str
    share: float
    previous: str | None  # the champion before the last change: what a rollback restores
    phase: str  # after the decision: "trial", "watch" or "settled"
    evidence: dict[str, Any] | None  # the test's (shared/rollout/promotion.py), or None
    event_id: str | None  # the label's event at which the test decided; None: an operator
    ts: float | None  # that record's event time
    model_version: int
    lineage: Lineage | None  # that record's position on its topic

    @classmethod
    def of(
        cls,
        pipeline: str,
        decision: dict[str, Any],
        model_version: int,
        event_id: str | None = None,
        ts: float | None = None,
        lineage: Lineage | None = None,
    ) -> ModelEvent:
        routing = decision["routing"]
        return cls(
            pipeline,
            decision["seq"],
            decision["kind"],
            decision["source"],
            routing["champion"],
            routing["challenger"],
            routing["policy"],
            routing["share"],
            decision["previous"],
            decision["phase"],
            decision["evidence"],
            event_id,
            ts,
            model_version,
            lineage,
        )

    def to_wire(self) -> dict[str, Any]:
        return {
            "pipeline": self.pipeline,
            "seq": self.seq,
            "kind": self.kind,
            "source": self.source,
            "champion": self.champion,
            "challenger": self.challenger,
            "policy": self.policy,
            "share": self.share,
            "previous": self.previous,
            "phase": self.phase,
            "evidence": self.evidence,
            "event_id": self.event_id,
            "ts": self.ts,
            "model_version": self.model_version,
            "lineage": None if self.lineage is None else self.lineage.to_wire(),
        }
