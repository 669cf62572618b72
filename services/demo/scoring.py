"""Prequential figures computed from what the predictions topic carried (pure logic)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from services.learner.core import metric_input
from shared.messages import Prediction


def dedupe(predictions: Iterable[Prediction]) -> dict[str, list[Prediction]]:
    """Per model, one prediction per input record (by lineage), in input order."""
    seen: dict[str, dict[tuple[str, int, int], Prediction]] = {}
    for p in predictions:
        key = (p.lineage.topic, p.lineage.partition, p.lineage.offset)
        seen.setdefault(p.model, {}).setdefault(key, p)
    return {model: [byk[k] for k in sorted(byk)] for model, byk in seen.items()}


def score(
    predictions: Sequence[Prediction], labels: Mapping[str, Any], metrics: Sequence[Any]
) -> tuple[list[Any], int]:
    """Update each metric with (true label, prediction); returns metrics and unlabelled count."""
    unlabelled = 0
    for p in predictions:
        y = labels.get(p.event_id)
        if y is None:
            unlabelled += 1
        elif p.prediction is not None:  # River's progressive_val_score skips "no guess" too
            for metric in metrics:
                metric.update(y, metric_input(metric, p))
    return list(metrics), unlabelled
