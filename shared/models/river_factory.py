"""Builds River objects from spec nodes by dotted name — never by evaluating code strings.

A node is `"river.x.Y"`, `{"class": "river.x.Y", "params": {...}}`, or, for estimators,
`{"pipeline": [node, ...]}`. Only public classes inside the `river` package that derive
from `river.base.Base` can be named.
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Mapping
from typing import Any

DOTTED = re.compile(r"^river(\.[A-Za-z][A-Za-z0-9_]*)+$")


class FactoryError(ValueError):
    """`path` names the spec location (e.g. `models[0].river.pipeline[1]`)."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path


def resolve_class(dotted: str, path: str) -> type:
    if not isinstance(dotted, str) or not DOTTED.match(dotted):
        raise FactoryError(path, f"{dotted!r} is not a dotted name inside `river`")
    parts = dotted.split(".")
    for split in range(len(parts) - 1, 0, -1):
        module_name = ".".join(parts[:split])
        try:
            obj: Any = importlib.import_module(module_name)
        except ImportError:
            continue
        try:
            for attr in parts[split:]:
                obj = getattr(obj, attr)
        except AttributeError:
            break
        from river import base

        if not (inspect.isclass(obj) and issubclass(obj, base.Base)):
            raise FactoryError(path, f"{dotted} is not a River estimator, transformer or metric")
        return obj
    raise FactoryError(path, f"{dotted} does not exist in this River version")


def build_component(node: Any, path: str) -> Any:
    if isinstance(node, str):
        name, cls, params = node, resolve_class(node, path), {}
    elif isinstance(node, Mapping) and "class" in node:
        name, cls = node["class"], resolve_class(node["class"], f"{path}.class")
        params = {k: _param(v, f"{path}.params.{k}") for k, v in (node.get("params") or {}).items()}
    else:
        raise FactoryError(path, "expected a dotted name or a mapping with `class`")
    try:
        return cls(**params)
    except (TypeError, ValueError) as exc:
        raise FactoryError(path, f"cannot construct {name}: {exc}") from exc


def _param(value: Any, path: str) -> Any:
    if isinstance(value, Mapping) and "class" in value and set(value) <= {"class", "params"}:
        return build_component(value, path)
    if isinstance(value, list):
        return [_param(v, f"{path}[{i}]") for i, v in enumerate(value)]
    return value


def build_estimator(node: Any, path: str) -> Any:
    """A River estimator, or a pipeline chained like `a | b | c`."""
    if isinstance(node, Mapping) and "pipeline" in node:
        steps = [
            build_component(s, f"{path}.pipeline[{i}]") for i, s in enumerate(node["pipeline"])
        ]
        model = steps[0]
        for i, step in enumerate(steps[1:], start=1):
            try:
                model = model | step
            except (TypeError, ValueError) as exc:
                raise FactoryError(
                    f"{path}.pipeline[{i}]", f"cannot chain this step: {exc}"
                ) from exc
        return model
    return build_component(node, path)


def check_task(model: Any, task: str, path: str) -> None:
    from river import base

    if task in ("binary", "multiclass") and not isinstance(model, base.Classifier):
        raise FactoryError(path, f"task {task!r} needs a classifier; {model!r} is not one")
    if task == "regression" and not isinstance(model, base.Regressor):
        raise FactoryError(path, f"task 'regression' needs a regressor; {model!r} is not one")
    if task == "multiclass" and not getattr(model, "_multiclass", True):
        raise FactoryError(path, f"{model!r} is binary-only; the task is multiclass")


def build_metric(node: Any, path: str) -> Any:
    from river import metrics

    metric = build_component(node, path)
    if not isinstance(metric, metrics.base.Metric):
        raise FactoryError(path, f"{type(metric).__name__} is not a river.metrics metric")
    return metric


def default_metric(task: str) -> Any:
    from river import metrics

    return metrics.MAE() if task == "regression" else metrics.Accuracy()
