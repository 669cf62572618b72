"""The learner's results as plain tuples, and the records they become.

The model side returns tuples (cheap to build, and to ship from a model process); the
publishing side builds prediction/v1 and outcome/v1 records from them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from shared.codec import encode
from shared.messages import Event, Lineage, Outcome, Prediction
from shared.messages.outcome import Reaction

# Where the learner reacted to concept drift (reaction.py): (event_id, model, detector,
# action, statistics), put on that outcome as its `reaction`.
Mark = tuple[str, str, str, str, dict[str, float]]
# A rollout decision (shared/rollout/state.py) at a record: ("rollout", event_id, decision).
RolloutMark = tuple[str, str, dict[str, Any]]
AnyMark = Mark | RolloutMark

Scalar = int | float | str | bool | None
Proba = tuple[tuple[Scalar, float], ...]
Score = tuple[Scalar, Proba | None]  # one model's (prediction, probability per class)
Scores = tuple[Score, ...]  # every model's, in the spec's order
# A prediction that met its label: (event_id, entity, ts, model_version, scores, label,
# source, lag in events); source is "inline", "topic" or "default".
Joined = tuple[str, str, float, int, Scores, Any, str, int]


def predictions(
    event: Event,
    version: int,
    scores: Scores,
    names: tuple[str, ...],
    pipeline: str,
    task: str,
    lineage: Lineage,
) -> list[Prediction]:
    """One prediction/v1 per model (positional: the field order of prediction/v1)."""
    event_id, entity, ts = event.event_id, event.entity, event.ts
    return [
        Prediction(event_id, entity, ts, pipeline, name, version, task, pred, proba, lineage)
        for name, (pred, proba) in zip(names, scores, strict=True)
    ]


def outcomes(
    joined: Joined, names: tuple[str, ...], pipeline: str, task: str, lineage: Lineage
) -> list[Outcome]:
    """One outcome/v1 per model (positional: the field order of outcome/v1)."""
    event_id, entity, ts, version, scores, label, source, lag = joined
    return [
        Outcome(
            event_id,
            entity,
            ts,
            pipeline,
            name,
            version,
            task,
            pred,
            proba,
            label,
            source,
            lag,
            lineage,
        )
        for name, (pred, proba) in zip(names, scores, strict=True)
    ]


def reactions_of(marks: Sequence[AnyMark]) -> list[Mark]:
    return [m for m in marks if len(m) == 5]


def decisions_of(marks: Sequence[AnyMark]) -> list[RolloutMark]:
    return [m for m in marks if len(m) == 3]


def reaction_at(marks: Sequence[Mark], event_id: str, model: str) -> Reaction | None:
    for m_event, m_model, detector, action, statistics in marks:
        if m_event == event_id and m_model == model:
            return Reaction(detector, action, dict(statistics))
    return None


def mark_outcomes(outbox: list[Outcome], marks: Sequence[Mark]) -> None:
    """Put each mark on its outcome, in place."""
    for i, o in enumerate(outbox):
        reaction = reaction_at(marks, o.event_id, o.model)
        if reaction is not None:
            outbox[i] = msgspec.structs.replace(o, reaction=reaction)


def mark_records(
    records: list[tuple[bytes, bytes | None]], start: int, marks: Sequence[Mark]
) -> None:
    """`mark_outcomes` on encoded (value, key) outcome records from `start` on: the same
    bytes as an outcome/v1 built with its reaction (the field comes last either way). Rare:
    at most one a model per cool-down."""
    for i in range(start, len(records)):
        value, key = records[i]
        wire = msgspec.msgpack.decode(value)
        reaction = reaction_at(marks, wire["event_id"], wire["model"])
        if reaction is not None:
            wire["reaction"] = reaction.to_wire()
            records[i] = (encode(wire), key)
