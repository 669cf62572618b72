"""Loading and validating pipeline specs, with errors that name the bad field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from jsonschema import ValidationError
from jsonschema.exceptions import best_match

from shared.models import build_model
from shared.models.river_factory import FactoryError, build_metric, check_task
from shared.rollout.state import PromotionSpec, RolloutSpec
from shared.schemas import validator
from shared.spec.drift import parse_drift
from shared.spec.features import parse_features, seconds
from shared.spec.labels import check_label
from shared.spec.model import IngestPolicy, LabelSettings, ModelSpec, PipelineSpec, ServingSpec

SPEC_KIND = "pipeline-spec/v1"


class SpecError(ValueError):
    """Every problem found, each prefixed by the spec's source and the field's path."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(
            f"invalid pipeline spec {source}:\n" + "\n".join(f"  - {p}" for p in problems)
        )


def field_path(parts: Any) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _deepest(error: ValidationError) -> ValidationError:
    """For oneOf/anyOf, the branch that got furthest into the document says what is wrong."""
    while error.context:
        depth = max(len(e.absolute_path) for e in error.context)
        error = best_match([e for e in error.context if len(e.absolute_path) == depth])
    return error


def schema_problems(doc: Any) -> list[str]:
    errors = sorted(validator(SPEC_KIND).iter_errors(doc), key=lambda e: list(map(str, e.path)))
    problems = []
    for err in errors:
        deep = _deepest(err)
        problems.append(f"{field_path(deep.absolute_path)}: {deep.message}")
    return problems


def load_spec(path: str | Path) -> PipelineSpec:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise SpecError(str(path), [f"cannot read: {exc.strerror}"]) from exc
    return parse_spec(text, str(path))


def parse_spec(text: str, source: str = "<string>") -> PipelineSpec:
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise SpecError(
            source, [f"{where}not valid YAML ({getattr(exc, 'problem', exc)})"]
        ) from exc
    problems = schema_problems(doc)
    if problems:
        raise SpecError(source, problems)
    problems = semantic_problems(doc)
    if problems:
        raise SpecError(source, problems)
    return _to_spec(doc)


def semantic_problems(doc: dict[str, Any]) -> list[str]:
    """What the schema cannot say: unique names, a known champion, buildable River objects."""
    problems = []
    names = [m["name"] for m in doc["models"]]
    for i, name in enumerate(names):
        if name in names[:i]:
            problems.append(f"models[{i}].name: duplicate model name {name!r}")
    if "champion" in doc and doc["champion"] not in names:
        problems.append(f"champion: {doc['champion']!r} is not one of the models {names}")
    for i, m in enumerate(doc["models"]):
        kind = "river" if "river" in m else "vw"
        path = f"models[{i}].{kind}"
        try:
            model = build_model(m["name"], kind, m[kind], doc["task"], path)
            if kind == "river":
                check_task(model.estimator, doc["task"], path)  # type: ignore[attr-defined]
        except FactoryError as exc:
            problems.append(str(exc))
    default = doc.get("labels", {}).get("default")
    if default is not None:
        try:
            check_label(default, doc["task"])
        except ValueError as exc:
            problems.append(f"labels.default: {exc}")
    problems.extend(rollout_problems(doc, names))
    problems.extend(parse_features(doc.get("features", {}))[1])
    problems.extend(parse_drift(doc.get("drift", {}), doc["task"])[1])
    for i, node in enumerate(doc.get("metrics", [])):
        try:
            build_metric(node, f"metrics[{i}]")
        except FactoryError as exc:
            problems.append(str(exc))
    return problems


def _to_spec(doc: dict[str, Any]) -> PipelineSpec:
    labels = doc.get("labels", {})
    models = tuple(
        ModelSpec(m["name"], kind, m[kind])
        for m in doc["models"]
        for kind in ("river", "vw")
        if kind in m
    )
    return PipelineSpec(
        name=doc["name"],
        task=doc["task"],
        models=models,
        champion=doc.get("champion", models[0].name),
        metrics=tuple(doc.get("metrics", ())),
        labels=LabelSettings(
            horizon_events=labels.get("horizon_events", 100_000), default=labels.get("default")
        ),
        entity_field=doc.get("entity_field", "entity"),
        metrics_window=doc.get("metrics_window", 1000),
        features=parse_features(doc.get("features", {}))[0],
        description=doc.get("description", ""),
        ingest=_ingest_policy(doc),
        drift=parse_drift(doc.get("drift", {}), doc["task"])[0],
        serving=_serving(doc.get("serving", {})),
    )


def _serving(section: dict[str, Any]) -> ServingSpec:
    node = section.get("rollout")
    if node is None:
        return ServingSpec(by=section.get("by", "learner"))
    promotion = node.get("promotion")
    default = PromotionSpec()
    return ServingSpec(
        by=section.get("by", "learner"),
        rollout=RolloutSpec(
            challenger=node.get("challenger"),
            policy=node.get("policy", "blue-green"),
            share=float(node.get("share", 0.1)),
            promotion=None
            if promotion is None
            else PromotionSpec(
                confidence=float(promotion.get("confidence", default.confidence)),
                label_budget=promotion.get("label_budget", default.label_budget),
                watch_labels=promotion.get("watch_labels", default.watch_labels),
                loss_scale=float(promotion.get("loss_scale", default.loss_scale)),
                min_improvement=float(promotion.get("min_improvement", default.min_improvement)),
            ),
        ),
    )


def rollout_problems(doc: dict[str, Any], names: list[str]) -> list[str]:
    node = doc.get("serving", {}).get("rollout")
    if node is None:
        return []
    problems = []
    champion = doc.get("champion", names[0])
    challenger = node.get("challenger")
    path = "serving.rollout"
    if challenger is not None and challenger not in names:
        problems.append(f"{path}.challenger: {challenger!r} is not one of the models {names}")
    if challenger is not None and challenger == champion:
        problems.append(f"{path}.challenger: {challenger!r} is the champion")
    if challenger is None and node.get("policy", "blue-green") != "blue-green":
        problems.append(f"{path}.policy: {node['policy']} needs a challenger")
    if challenger is None and "promotion" in node:
        problems.append(f"{path}.promotion: there is no challenger to promote")
    return problems


def _ingest_policy(doc: dict[str, Any]) -> IngestPolicy:
    section = doc.get("ingest", {})
    default = IngestPolicy()
    return IngestPolicy(
        unknown_fields=section.get("unknown_fields", default.unknown_fields),
        non_finite=section.get("non_finite", default.non_finite),
        dedupe_horizon_s=seconds(section.get("dedupe_horizon", default.dedupe_horizon_s)),
        dedupe_max_ids=section.get("dedupe_max_ids", default.dedupe_max_ids),
        entity_field=doc.get("entity_field", "entity"),
    )
