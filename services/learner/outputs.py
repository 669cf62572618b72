"""The learner's results as plain tuples, and the records they become.

The model side returns tuples (cheap to build, and to ship from a model process); the
publishing side builds prediction/v1 and outcome/v1 records from them.
"""

from __future__ import annotations

from typing import Any

from shared.messages import Event, Lineage, Outcome, Prediction

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
