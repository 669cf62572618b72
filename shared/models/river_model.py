"""River estimators and pipelines as model adapters."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

Scalar = int | float | str | bool | None
Proba = tuple[tuple[Scalar, float], ...]


def plain(value: Any) -> Any:
    """NumPy scalars to Python ones, so every output can be serialised."""
    item = getattr(value, "item", None)
    return item() if callable(item) and not isinstance(value, str | bytes) else value


class RiverModel:
    """Wraps a River estimator or pipeline for one task."""

    def __init__(self, name: str, estimator: Any, task: str) -> None:
        self.name = name
        self.estimator = estimator
        self.classifier = task in ("binary", "multiclass")
        self._argmax_is_predict = self.classifier and _predict_is_argmax(estimator)

    def predict(self, x: Mapping[str, Any]) -> tuple[Scalar, Proba | None]:
        if not self.classifier:
            return plain(self.estimator.predict_one(x)), None
        proba: dict[Any, float] = self.estimator.predict_proba_one(x)
        # Classes in a canonical order: a model that keeps them in a set (KNN) would
        # otherwise list them differently after a restore.
        pairs = sorted(((plain(c), float(p)) for c, p in proba.items()), key=_class_order)
        if self._argmax_is_predict:
            # River's Classifier.predict_one is this argmax; skip the second pass.
            pred = max(pairs, key=lambda cp: cp[1])[0] if pairs else None
        else:
            pred = plain(self.estimator.predict_one(x))
        return pred, tuple(pairs)

    def learn(self, x: Mapping[str, Any], y: Scalar) -> None:
        self.estimator.learn_one(x, y)


def _class_order(pair: tuple[Any, float]) -> tuple[str, Any]:
    return (type(pair[0]).__name__, pair[0])


def _predict_is_argmax(estimator: Any) -> bool:
    from river import base

    last = estimator[-1] if hasattr(estimator, "steps") else estimator
    return type(last).predict_one is base.Classifier.predict_one
