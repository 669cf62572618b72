"""The learner's reaction to concept drift (the spec's `drift.reaction`); pure logic.

The learner runs the spec's concept detector on each model's errors, in the order it
learns the labels, with the same rule and cool-down as the monitor (shared.concept_drift).
A reaction changes the model, so it must happen at the same record on every run and after
every restart: it is decided here, inside the learner's own ordered stream and its
checkpointed state, never by an alert fetched from a topic at some moment. The outcome at
which the learner reacted is marked (`Mark`), and the monitor publishes that mark as the
concept-drift alert, with what was done.

- reset: the model starts afresh from its spec.
- fallback: a fresh model learns alongside on the same labelled features; after
  `trial_labels` labels it replaces the model if it made fewer errors over them (both
  predict each label's features just before they learn them), else it is dropped.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from services.learner.outputs import AnyMark
from shared.concept_drift import CoolDown, detect_rise, prediction_error
from shared.models import ModelAdapter, build_model
from shared.spec import PipelineSpec
from shared.spec.drift import build_detector

log = logging.getLogger(__name__)


@dataclass
class Trial:
    """A fresh model learning alongside the one it may replace, and both one's errors."""

    model: ModelAdapter
    labels: int = 0
    errors_model: float = 0.0
    errors_fresh: float = 0.0


@dataclass
class Watch:
    """One model's concept detector and its cool-down."""

    detector: Any
    cool: CoolDown


@dataclass
class Reactions:
    task: str
    action: str  # "reset" or "fallback"
    trial_labels: int
    detector: Any  # the spec's node, to build each model's detector
    cooldown: int
    blueprints: dict[str, tuple[str, Any, str]]  # model -> (kind, config, spec path)
    watches: dict[str, Watch] = field(default_factory=dict)
    trials: dict[str, Trial] = field(default_factory=dict)
    counts: Counter[str] = field(default_factory=Counter)

    @classmethod
    def from_spec(cls, spec: PipelineSpec) -> Reactions | None:
        """None when the spec asks for no reaction (the learner's hot path then skips all
        of this)."""
        drift = spec.drift
        if not drift.reaction.enabled:
            return None
        blueprints = {
            m.name: (m.kind, m.config, f"models[{i}].{m.kind}") for i, m in enumerate(spec.models)
        }
        return cls(
            spec.task,
            drift.reaction.action,
            drift.reaction.trial_labels,
            drift.concept.detector,
            drift.concept.cooldown_events,
            blueprints,
        )

    def configuration(self) -> tuple[Any, ...]:
        return (
            self.task,
            self.action,
            self.trial_labels,
            self.detector,
            self.cooldown,
            self.blueprints,
        )

    def forget(self, name: str) -> None:
        """A model replaced from outside (a rollback): its trial and detector go."""
        if self.trials.pop(name, None) is not None:
            self.counts["fallbacks_dropped"] += 1
        self.watches.pop(name, None)

    def fresh(self, name: str) -> ModelAdapter:
        kind, config, path = self.blueprints[name]
        return build_model(name, kind, config, self.task, path)

    def try_fresh(
        self, models: Mapping[str, ModelAdapter], x: Any, label: Any, paused: frozenset[str]
    ) -> None:
        """Before the models learn a label: each fresh model on trial and the model it may
        replace predict the label's features, then the fresh one learns them (not while an
        operator has paused the model's learning)."""
        task = self.task
        for name, trial in self.trials.items():
            if name in paused:
                continue
            error_model = prediction_error(task, models[name].predict(x)[0], label)
            error_fresh = prediction_error(task, trial.model.predict(x)[0], label)
            if error_model is not None and error_fresh is not None:  # else: not comparable
                trial.errors_model += error_model
                trial.errors_fresh += error_fresh
            trial.model.learn(x, label)
            trial.labels += 1

    def settle_trials(self, models: dict[str, ModelAdapter]) -> bool:
        """After the models learned: trials that are over replace their model or end.
        True if a model was replaced."""
        replaced = False
        for name, trial in list(self.trials.items()):
            if trial.labels < self.trial_labels:
                continue
            del self.trials[name]
            figures = {
                "labels": trial.labels,
                "errors_model": trial.errors_model,
                "errors_fresh": trial.errors_fresh,
            }
            if trial.errors_fresh < trial.errors_model:
                models[name] = trial.model
                replaced = True
                self.counts["fallbacks_promoted"] += 1
                log.info("fallback model replaces the drifted one", extra={"fields": figures})
            else:
                self.counts["fallbacks_dropped"] += 1
                log.info("fallback model dropped", extra={"fields": figures})
        return replaced

    def observe(
        self,
        models: dict[str, ModelAdapter],
        event_id: str,
        label: Any,
        predictions: list[tuple[str, Any]],
        marks: list[AnyMark],
    ) -> bool:
        """Each model's error on one labelled prediction, made before the label came; on a
        drift (a rise of the error, past the cool-down) react and add a mark. True if a
        model was replaced."""
        replaced = False
        for name, prediction in predictions:
            error = prediction_error(self.task, prediction, label)
            if error is None:
                continue
            watch = self.watches.get(name)
            if watch is None:
                detector = build_detector(self.detector, self.task, "drift.concept.detector")
                watch = self.watches[name] = Watch(detector, CoolDown(self.cooldown))
            watch.cool.tick()
            _, figures = detect_rise(watch.detector, error)
            if figures is None or not watch.cool.allow():
                continue
            if self.action == "reset":
                models[name] = self.fresh(name)
                self.trials.pop(name, None)
                replaced = True
                self.counts["resets"] += 1
            else:
                if name in self.trials:  # a new trial replaces the running one
                    self.counts["fallbacks_dropped"] += 1
                self.trials[name] = Trial(self.fresh(name))
                self.counts["fallbacks_started"] += 1
            marks.append((event_id, name, type(watch.detector).__name__, self.action, figures))
            log.info(
                "concept drift: model %s",
                "reset" if self.action == "reset" else "on trial against a fresh one",
                extra={"fields": {"model": name, "event_id": event_id}},
            )
        return replaced


def carried_over(restored: Reactions | None, spec: Reactions | None) -> Reactions | None:
    """At a restore: the checkpoint's reaction state, unless the spec's drift.reaction or
    concept detector changed since; then the spec's, its detectors starting afresh (the
    detectors of another configuration say nothing about this one)."""
    if restored is None or spec is None:
        if restored is not spec:
            log.info("drift.reaction changed since the checkpoint: detectors start afresh")
        return spec
    if restored.configuration() != spec.configuration():
        log.info("drift.reaction changed since the checkpoint: detectors start afresh")
        return spec
    return restored
