"""One interface over every model kind a spec can declare."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from shared.models.river_factory import FactoryError, build_estimator
from shared.models.river_model import RiverModel
from shared.models.vw_model import VWConfigError, VWModel

Scalar = int | float | str | bool | None
Proba = tuple[tuple[Scalar, float], ...]


class ModelAdapter(Protocol):
    """River's narrow shape: predict on a dict of features, learn one labelled dict."""

    name: str

    def predict(self, x: Mapping[str, Any]) -> tuple[Scalar, Proba | None]: ...

    def learn(self, x: Mapping[str, Any], y: Scalar) -> None: ...

    def predict_learn(self, x: Mapping[str, Any], y: Scalar) -> tuple[Scalar, Proba | None]:
        """`predict` then `learn` on the same features: the prediction made before learning,
        in one call where the library has one."""
        ...


def build_model(name: str, kind: str, config: Any, task: str, path: str) -> ModelAdapter:
    """A fresh model from its spec section; errors name the field (`models[1].vw: ...`)."""
    if kind == "river":
        return RiverModel(name, build_estimator(config, path), task)
    if kind == "vw":
        try:
            return VWModel(name, config.get("args", ""), task, config.get("classes"))
        except VWConfigError as exc:
            raise FactoryError(path, str(exc)) from exc
    raise FactoryError(path, f"unknown model kind {kind!r}")
