"""The `drift:` section of a pipeline spec: which detectors the monitor runs, and how
often it may alert.

Every count here is in observations (outcomes or feature records), never wall-clock
time, so the same stream always gives the same alerts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from shared.models.river_factory import FactoryError, build_component

KINDS = ("concept", "covariate", "prediction")
DEFAULT_CONCEPT_DETECTOR = "river.drift.ADWIN"


@dataclass(frozen=True, slots=True)
class ConceptDriftSpec:
    """A River drift detector on each model's error stream (0/1 for classification, the
    absolute error for regression)."""

    enabled: bool = True
    detector: Any = DEFAULT_CONCEPT_DETECTOR  # a component node, as for models
    cooldown_events: int = 1000


@dataclass(frozen=True, slots=True)
class DistributionDriftSpec:
    """A reference window against the most recent window, tested every `check_every`
    observations: two-sample Kolmogorov-Smirnov for numbers, chi-square for classes."""

    enabled: bool = True
    warmup: int = 1000  # observations skipped first: a young model's answers, filling windows
    reference_size: int = 1000
    window_size: int = 1000
    check_every: int = 250
    alpha: float = 1e-6  # small: every feature is tested again and again
    cooldown_events: int = 1000
    features: tuple[str, ...] | None = None  # covariate only; None: every numeric one


@dataclass(frozen=True, slots=True)
class ReactionSpec:
    """What the learner does when a model's concept drift is detected: nothing; "reset"
    (the model starts afresh from its spec); or "fallback" (a fresh one learns alongside
    for `trial_labels` labels, then replaces the model if it made fewer errors over them).

    With a reaction the learner runs the concept detector itself, on every outcome in its
    own order (a reaction must happen at the same record on every run), and marks the
    outcome where it reacted; the monitor turns that mark into the alert."""

    action: str = "none"
    trial_labels: int = 1000

    @property
    def enabled(self) -> bool:
        return self.action != "none"


@dataclass(frozen=True, slots=True)
class DriftSpec:
    concept: ConceptDriftSpec = field(default_factory=ConceptDriftSpec)
    covariate: DistributionDriftSpec = field(default_factory=DistributionDriftSpec)
    prediction: DistributionDriftSpec = field(default_factory=DistributionDriftSpec)
    reaction: ReactionSpec = field(default_factory=ReactionSpec)


def build_detector(node: Any, task: str, path: str) -> Any:
    """A fresh River drift detector from its spec node; binary detectors (the DDM family)
    only where errors are 0/1."""
    from river import base

    detector = build_component(node, path)
    if not isinstance(detector, base.DriftDetector | base.BinaryDriftDetector):
        raise FactoryError(path, f"{type(detector).__name__} is not a river.drift detector")
    if task == "regression" and isinstance(detector, base.BinaryDriftDetector):
        raise FactoryError(
            path,
            f"{type(detector).__name__} takes 0/1 errors; a regression's errors are numbers "
            "(use river.drift.ADWIN or river.drift.PageHinkley)",
        )
    return detector


def parse_drift(section: Mapping[str, Any], task: str) -> tuple[DriftSpec, list[str]]:
    """The section (already checked against the schema) as values, and what else is wrong."""
    problems: list[str] = []
    concept_node = section.get("concept", {})
    concept = ConceptDriftSpec(
        enabled=concept_node.get("enabled", True),
        detector=concept_node.get("detector", DEFAULT_CONCEPT_DETECTOR),
        cooldown_events=concept_node.get("cooldown_events", 1000),
    )
    try:
        build_detector(concept.detector, task, "drift.concept.detector")
    except FactoryError as exc:
        problems.append(str(exc))
    covariate = _distribution(section.get("covariate", {}), "drift.covariate", problems)
    prediction = _distribution(section.get("prediction", {}), "drift.prediction", problems)
    if prediction.features is not None:
        problems.append("drift.prediction.features: only covariate drift is per feature")
    reaction_node = section.get("reaction", {})
    reaction = ReactionSpec(
        action=reaction_node.get("action", "none"),
        trial_labels=reaction_node.get("trial_labels", 1000),
    )
    if reaction.enabled and not concept.enabled:
        problems.append(
            f"drift.reaction.action: {reaction.action!r} reacts to concept drift, "
            "which drift.concept.enabled turns off"
        )
    spec = DriftSpec(concept, covariate, prediction, reaction)
    return spec, problems


def _distribution(node: Mapping[str, Any], path: str, problems: list[str]) -> DistributionDriftSpec:
    default = DistributionDriftSpec()
    features = node.get("features")
    spec = DistributionDriftSpec(
        enabled=node.get("enabled", default.enabled),
        warmup=node.get("warmup", default.warmup),
        reference_size=node.get("reference_size", default.reference_size),
        window_size=node.get("window_size", default.window_size),
        check_every=node.get("check_every", default.check_every),
        alpha=node.get("alpha", default.alpha),
        cooldown_events=node.get("cooldown_events", default.cooldown_events),
        features=None if features is None else tuple(features),
    )
    if spec.check_every > spec.window_size:
        problems.append(
            f"{path}.check_every: {spec.check_every} is more than window_size "
            f"{spec.window_size}; some observations would never be tested"
        )
    return spec
