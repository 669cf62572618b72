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
        if self._argmax_is_predict:
            # River's Classifier.predict_one is this argmax; skip the second pass.
            binary = binary_proba(proba)
            if binary is not None:
                return binary
            return canonical_proba(proba)
        return plain(self.estimator.predict_one(x)), canonical_proba(proba)[1]

    def learn(self, x: Mapping[str, Any], y: Scalar) -> None:
        self.estimator.learn_one(x, y)

    def predict_learn(self, x: Mapping[str, Any], y: Scalar) -> tuple[Scalar, Proba | None]:
        out = self.predict(x)
        self.estimator.learn_one(x, y)
        return out


def canonical_proba(proba: Mapping[Any, float]) -> tuple[Scalar, Proba]:
    """The argmax and the classes in a canonical order: a model that keeps them in a set
    (KNN) would otherwise list them differently after a restore. The argmax is River's
    `Classifier.predict_one`: on a tie, the first of the greatest in the model's own order."""
    pairs = sorted(((plain(c), float(p)) for c, p in proba.items()), key=_class_order)
    pred = plain(max(proba, key=proba.__getitem__)) if proba else None
    return pred, tuple(pairs)


def binary_proba(proba: Mapping[Any, float]) -> tuple[Scalar, Proba] | None:
    """`canonical_proba` for the commonest map, {False: p, True: q}, without the sort;
    None for any other map."""
    if len(proba) != 2:
        return None
    (c0, p0), (c1, p1) = proba.items()
    if type(c0) is not bool or type(c1) is not bool or c0 is c1:
        return None
    pred = c1 if p1 > p0 else c0  # River's argmax (`max`): on a tie, the first in the map's order
    p_false, p_true = (float(p0), float(p1)) if c0 is False else (float(p1), float(p0))
    return pred, ((False, p_false), (True, p_true))


def _class_order(pair: tuple[Any, float]) -> tuple[str, Any]:
    return (type(pair[0]).__name__, pair[0])


def _predict_is_argmax(estimator: Any) -> bool:
    from river import base

    last = estimator[-1] if hasattr(estimator, "steps") else estimator
    return type(last).predict_one is base.Classifier.predict_one
