"""Test-then-train over every model of a pipeline; pure logic, no Kafka or Redis.

For each event every model predicts on the event's data. With an inline label the
metrics are updated with those predictions and every model learns at once; otherwise the
frozen feature vector and the predictions wait (up to the spec's horizon, in events) for
the label from the labels topic, and the same happens when it comes.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from river import utils

from services.learner.window_metric import WindowMetric, rolling
from shared.messages import Event, Label, Lineage, Outcome, Prediction
from shared.models import ModelAdapter, build_model
from shared.models.river_factory import build_metric, default_metric
from shared.spec import LabelSettings, PipelineSpec
from shared.spec.labels import check_label


@dataclass(slots=True)
class Pending:
    """A scored event waiting for its label: the frozen features and what each model said."""

    x: dict[str, Any]
    predictions: list[Prediction]
    seq: int


MetricUpdate = tuple[Callable[[Any, Any], Any], bool]  # (metric.update, wants the proba map)


@dataclass(frozen=True, slots=True)
class Step:
    """One model's per-record calls, bound once (see `LearnerCore.plan`)."""

    predict: Callable[[Mapping[str, Any]], tuple[Any, Any]]
    learn: Callable[[Mapping[str, Any], Any], None]
    metrics: tuple[MetricUpdate, ...]


@dataclass
class LearnerCore:
    pipeline: str
    task: str
    models: dict[str, ModelAdapter]
    metrics: dict[str, list[Any]]
    labels: LabelSettings = field(default_factory=LabelSettings)
    model_version: int = 0
    events_seen: int = 0
    labels_learned: int = 0
    labels_unmatched: int = 0  # too late (past the horizon) or for an event never seen
    expired_defaulted: int = 0
    expired_unlabelled: int = 0
    learned: dict[str, int] = field(default_factory=dict)  # per model, for exactly-once checks
    pending: OrderedDict[str, Pending] = field(default_factory=OrderedDict)
    # Labels that came before their event (same event time, or a producer's clock): they
    # wait, as predictions do, up to the horizon.
    early: OrderedDict[str, tuple[Any, int]] = field(default_factory=OrderedDict)
    # Outcomes of the last call, for the caller to publish (drained, so never checkpointed).
    outbox: list[Outcome] = field(default_factory=list)
    # The bound calls of each model, rebuilt after a restore or a model swap (never pickled).
    _plan: dict[str, Step] | None = field(default=None, init=False, repr=False, compare=False)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_plan"] = None
        return state

    @property
    def plan(self) -> dict[str, Step]:
        """Per model: predict, learn and metric updates bound once, not looked up per record
        (a Rolling metric's attribute lookups alone cost a microsecond a record)."""
        plan = self._plan
        if plan is None:
            plan = self._plan = {
                name: Step(
                    model.predict,
                    model.learn,
                    tuple((m.update, wants_proba(m)) for m in self.metrics[name]),
                )
                for name, model in self.models.items()
            }
        return plan

    def replace_model(
        self, name: str, model: ModelAdapter, metrics: list[Any], learned: int
    ) -> None:
        """Rollback: one model and its metrics continue from an older state."""
        self.models[name] = model
        self.metrics[name] = metrics
        self.learned[name] = learned
        self._plan = None

    @classmethod
    def from_spec(cls, spec: PipelineSpec) -> LearnerCore:
        models: dict[str, ModelAdapter] = {}
        metrics: dict[str, list[Any]] = {}
        for i, m in enumerate(spec.models):
            models[m.name] = build_model(
                m.name, m.kind, m.config, spec.task, f"models[{i}].{m.kind}"
            )
            nodes = spec.metrics
            overall = (
                [build_metric(n, f"metrics[{j}]") for j, n in enumerate(nodes)]
                if nodes
                else [default_metric(spec.task)]
            )
            metrics[m.name] = overall + [rolling(x, spec.metrics_window) for x in overall]
        return cls(spec.name, spec.task, models, metrics, spec.labels)

    def process(self, event: Event, lineage: Lineage) -> list[Prediction]:
        """Predict with every model, then learn from the inline label if there is one."""
        label = event.label
        if label is not None:
            check_label(label, self.task)
        x = features(event.data)
        event_id, entity, ts = event.event_id, event.entity, event.ts
        pipeline, version, task = self.pipeline, self.model_version, self.task
        out = [
            # positional: the field order of prediction/v1
            Prediction(
                event_id, entity, ts, pipeline, name, version, task, *step.predict(x), lineage
            )
            for name, step in self.plan.items()
        ]
        self.events_seen += 1
        early = self.early.pop(event_id, None) if self.early else None
        if label is not None:
            self._learn(x, label, out, "inline", 0, lineage)
        elif early is not None:
            self._learn(x, early[0], out, "topic", 0, lineage)
        else:
            self.pending.pop(event_id, None)
            self.pending[event_id] = Pending(x, out, self.events_seen)
        if self.pending or self.early:
            self._expire(lineage)
        return out

    def process_label(self, label: Label, lineage: Lineage | None = None) -> str:
        """Join a delayed label with its pending prediction: "joined", or "early" if the
        event has not been seen (it may yet come; past the horizon the label is unmatched)."""
        check_label(label.label, self.task)
        waiting = self.pending.pop(label.event_id, None)
        if waiting is None:
            self.early.pop(label.event_id, None)
            self.early[label.event_id] = (label.label, self.events_seen)
            return "early"
        lag = self.events_seen - waiting.seq
        self._learn(waiting.x, label.label, waiting.predictions, "topic", lag, lineage)
        return "joined"

    def _expire(self, lineage: Lineage) -> None:
        """Past the horizon, predictions get the default label (or none); labels give up."""
        oldest_kept = self.events_seen - self.labels.horizon_events
        while self.early and next(iter(self.early.values()))[1] <= oldest_kept:
            self.early.popitem(last=False)
            self.labels_unmatched += 1
        while self.pending:
            event_id, waiting = next(iter(self.pending.items()))
            if waiting.seq > oldest_kept:
                return
            del self.pending[event_id]
            if self.labels.default is None:
                self.expired_unlabelled += 1
            else:
                lag = self.events_seen - waiting.seq
                self._learn(
                    waiting.x, self.labels.default, waiting.predictions, "default", lag, lineage
                )
                self.expired_defaulted += 1

    def _learn(
        self,
        x: Mapping[str, Any],
        label: Any,
        predictions: list[Prediction],
        source: str,
        lag: int,
        lineage: Lineage | None,
    ) -> None:
        """Score the predictions made before, learn once on the frozen features."""
        plan, learned, outbox = self.plan, self.learned, self.outbox
        for p in predictions:
            if lineage is not None:
                outbox.append(outcome(p, label, source, lag, lineage))
            step = plan[p.model]
            if p.prediction is not None:  # as River's progressive_val_score: no guess, no score
                for update, proba in step.metrics:
                    update(label, dict(p.proba) if proba and p.proba is not None else p.prediction)
            step.learn(x, label)
            learned[p.model] = learned.get(p.model, 0) + 1
        self.labels_learned += 1

    def metric_values(self) -> dict[str, dict[str, float]]:
        """Per model: prequential metrics over the whole stream and over the rolling window."""
        return {
            model: {metric_name(m): float(m.get()) for m in ms}
            for model, ms in self.metrics.items()
        }


def outcome(p: Prediction, label: Any, source: str, lag: int, lineage: Lineage) -> Outcome:
    # positional: the field order of outcome/v1
    return Outcome(
        p.event_id,
        p.entity,
        p.ts,
        p.pipeline,
        p.model,
        p.model_version,
        p.task,
        p.prediction,
        p.proba,
        label,
        source,
        lag,
        lineage,
    )


def metric_name(metric: Any) -> str:
    if isinstance(metric, utils.Rolling | WindowMetric):
        return f"{type(metric.obj).__name__} (last {metric.window_size})"
    return type(metric).__name__


def features(data: Mapping[str, Any]) -> dict[str, Any]:
    """Null means missing: River models expect an absent key, not None."""
    if type(data) is dict and None not in data.values():
        return data  # the commonest case, without a copy (events are never changed)
    return {k: v for k, v in data.items() if v is not None}


def wants_proba(metric: Any) -> bool:
    """Probabilistic metrics (e.g. LogLoss) take the probability map, the others labels."""
    return not getattr(metric, "requires_labels", True)


def metric_input(metric: Any, p: Prediction) -> Any:
    """Labels for label metrics, the probability map for probabilistic ones."""
    if not wants_proba(metric) or p.proba is None:
        return p.prediction
    return dict(p.proba)
