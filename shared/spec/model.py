"""The validated pipeline spec as immutable values."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from shared.rollout.state import RolloutSpec
from shared.spec.drift import DriftSpec
from shared.spec.features import FeatureSpec

Scalar = int | float | str | bool | None


@dataclass(frozen=True, slots=True)
class ModelSpec:
    name: str
    kind: str  # "river" or "vw"
    config: Any  # the model's section exactly as written in the spec


@dataclass(frozen=True, slots=True)
class LabelSettings:
    horizon_events: int = 100_000
    default: Scalar = None


@dataclass(frozen=True, slots=True)
class IngestPolicy:
    """How ingest treats what the contract does not allow; see the README's Ingest section."""

    unknown_fields: str = "reject"  # or "drop"
    non_finite: str = "missing"  # NaN/infinity in data: "missing" (null) or "reject"
    dedupe_horizon_s: float = 3600.0  # event time an id is remembered for
    dedupe_max_ids: int = 1_000_000  # per partition, whatever the horizon
    entity_field: str = "entity"


@dataclass(frozen=True, slots=True)
class ServingSpec:
    """Who publishes predictions: the learner (deterministic on replay) or scorer replicas
    (capacity; a prediction depends on which model snapshot was current)."""

    by: str = "learner"  # or "scorers"
    rollout: RolloutSpec | None = None  # None: every model's prediction is published


@dataclass(frozen=True, slots=True)
class PipelineSpec:
    name: str
    task: str
    models: tuple[ModelSpec, ...]
    champion: str
    metrics: tuple[Any, ...]
    labels: LabelSettings
    entity_field: str = "entity"
    metrics_window: int = 1000
    features: FeatureSpec | None = None
    description: str = ""
    ingest: IngestPolicy = IngestPolicy()
    drift: DriftSpec = field(default_factory=DriftSpec)
    serving: ServingSpec = ServingSpec()

    def describe(self) -> dict[str, Any]:
        """The spec as plain JSON-able values, for readers such as the API."""
        import dataclasses

        doc = dataclasses.asdict(self)
        doc["models"] = [{"name": m.name, "kind": m.kind, "config": m.config} for m in self.models]
        return doc

    @property
    def is_classification(self) -> bool:
        return self.task in ("binary", "multiclass")

    def model(self, name: str) -> ModelSpec:
        for m in self.models:
            if m.name == name:
                return m
        raise KeyError(name)
