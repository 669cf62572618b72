"""The monitor's pure logic: outcomes and feature records in, drift alerts out.

- Concept drift: a River detector per model on its error stream (0/1 for classification,
  the absolute error for regression). ADWIN also flags a fall of the error (a model that
  got better); only a rise is alerted.
- Covariate drift: a `TwoSampleWindow` per numeric feature.
- Prediction drift: a `TwoSampleWindow` per model on its predictions (classes, or values
  for regression).

Every alert is rate-limited per (model, kind, signal) by a cool-down counted in that
signal's observations, and its id is a hash of what was detected where, so the same
stream always gives the same alerts, whatever the wall clock says. No I/O here: the
service feeds records in order and checkpoints the engine with its offsets.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from services.monitor.windows import TwoSampleWindow
from shared.concept_drift import CoolDown, detect_rise, is_number, prediction_error
from shared.messages import DriftAlert, Lineage, Outcome
from shared.messages.drift_alert import alert_id
from shared.spec.drift import DriftSpec, build_detector

# A stream of ever new feature or model names must not grow the state without bound.
MAX_SIGNALS = 10_000

SignalKey = tuple[str | None, str, str]  # (model, kind, signal)


@dataclass
class _Signal:
    """One watched signal: its detector or window, and its cool-down."""

    watcher: Any
    cool: CoolDown


@dataclass
class DriftEngine:
    pipeline: str
    task: str
    spec: DriftSpec
    signals: dict[SignalKey, _Signal] = field(default_factory=dict)
    counts: Counter[str] = field(default_factory=Counter)

    def __setstate__(self, state: dict[str, Any]) -> None:
        """A checkpoint from before the cool-down was a CoolDown keeps its counts."""
        self.__dict__.update(state)
        for key, signal in self.signals.items():
            old = signal.__dict__
            if "cool" not in old:
                seen, quiet = old.pop("seen", 0), old.pop("quiet_until", 0)
                signal.cool = CoolDown(self._cooldown(key[1]), seen, quiet)

    def observe_outcome(self, outcome: Outcome, lineage: Lineage) -> list[DriftAlert]:
        """Concept and prediction drift of the outcome's model."""
        alerts: list[DriftAlert] = []
        self.counts["outcomes"] += 1
        model = outcome.model
        if self.spec.reaction.enabled:
            # The learner detects concept drift itself, to react at the same record on
            # every run; its mark on the outcome is the alert.
            reaction = outcome.reaction
            if reaction is not None:
                self.counts["alerts_concept"] += 1
                alerts.append(
                    self._build(
                        (model, "concept", "error"),
                        reaction.detector,
                        dict(reaction.statistics),
                        outcome,
                        lineage,
                        outcome.model_version,
                        reaction.action,
                    )
                )
        elif self.spec.concept.enabled:
            error = prediction_error(self.task, outcome.prediction, outcome.label)
            if error is None:
                self.counts["errors_skipped"] += 1
            else:
                figures = self._concept(model, error)
                if figures is not None:
                    alerts += self._alert(
                        (model, "concept", "error"),
                        figures,
                        outcome,
                        lineage,
                        outcome.model_version,
                    )
        if self.spec.prediction.enabled:
            value = outcome.prediction
            if self.task == "regression" and not is_number(value):
                self.counts["predictions_skipped"] += 1
            else:
                key = (model, "prediction", "prediction")
                signal = self._signal(key)
                if signal is not None:
                    figures = signal.watcher.update(value)
                    if figures is not None:
                        alerts += self._alert(key, figures, outcome, lineage, outcome.model_version)
        return alerts

    def observe_features(
        self, event_id: str, ts: float, features: Mapping[str, Any], lineage: Lineage
    ) -> list[DriftAlert]:
        """Covariate drift of each watched numeric feature of one record."""
        if not self.spec.covariate.enabled:
            return []
        self.counts["feature_records"] += 1
        watched = self.spec.covariate.features
        names = watched if watched is not None else sorted(features)
        alerts: list[DriftAlert] = []
        where = _Where(event_id, ts)
        for name in names:
            value = features.get(name)
            if not is_number(value):
                continue  # missing, a string or a boolean: not a numeric feature here
            key = (None, "covariate", name)
            signal = self._signal(key)
            if signal is None:
                continue
            figures = signal.watcher.update(float(value))
            if figures is not None:
                alerts += self._alert(key, figures, where, lineage, None)
        return alerts

    def _concept(self, model: str, error: float) -> dict[str, float] | None:
        signal = self._signal((model, "concept", "error"))
        if signal is None:
            return None
        detected, figures = detect_rise(signal.watcher, error)
        if detected and figures is None:
            self.counts["improvements"] += 1  # the model got better: not an alert
        return figures

    def _signal(self, key: SignalKey) -> _Signal | None:
        signal = self.signals.get(key)
        if signal is None:
            if len(self.signals) >= MAX_SIGNALS:
                self.counts["signals_refused"] += 1
                return None
            kind = key[1]
            if kind == "concept":
                watcher = build_detector(self.spec.concept.detector, self.task, "drift.concept")
            elif kind == "prediction":
                watcher = TwoSampleWindow(self.spec.prediction, self.task == "regression")
            else:
                watcher = TwoSampleWindow(self.spec.covariate, True)
            signal = self.signals[key] = _Signal(watcher, CoolDown(self._cooldown(kind)))
        signal.cool.tick()
        return signal

    def _cooldown(self, kind: str) -> int:
        if kind == "concept":
            return self.spec.concept.cooldown_events
        return (
            self.spec.prediction if kind == "prediction" else self.spec.covariate
        ).cooldown_events

    def _alert(
        self,
        key: SignalKey,
        figures: dict[str, float],
        where: Outcome | _Where,
        lineage: Lineage,
        version: int | None,
    ) -> list[DriftAlert]:
        signal = self.signals[key]
        kind = key[1]
        if not signal.cool.allow():
            self.counts["alerts_suppressed"] += 1
            return []
        self.counts[f"alerts_{kind}"] += 1
        watcher = signal.watcher
        detector = watcher.test if isinstance(watcher, TwoSampleWindow) else type(watcher).__name__
        return [self._build(key, detector, figures, where, lineage, version, "none")]

    def _build(
        self,
        key: SignalKey,
        detector: str,
        figures: dict[str, float],
        where: Outcome | _Where,
        lineage: Lineage,
        version: int | None,
        action: str,
    ) -> DriftAlert:
        model, kind, name = key
        return DriftAlert(
            alert_id(self.pipeline, model, kind, name, where.event_id),
            self.pipeline,
            model,
            version,
            kind,
            name,
            detector,
            figures,
            where.event_id,
            where.ts,
            action,
            lineage,
        )


@dataclass(frozen=True, slots=True)
class _Where:
    event_id: str
    ts: float
