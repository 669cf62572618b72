"""Test-then-train over every model of a pipeline; pure logic, no Kafka or Redis.

For each event every model predicts on the event's data. With an inline label the
metrics are updated with those predictions and every model learns at once; otherwise the
frozen feature vector and the predictions wait (up to the spec's horizon, in events) for
the label from the labels topic, and the same happens when it comes.

The hot path (`score`, `join`) returns plain tuples, not messages: it may run in a model
process of its own (worker.py), and whoever publishes turns them into records
(outputs.py).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from river import utils

from services.learner.metric_history import MetricHistory
from services.learner.outputs import AnyMark, Joined, Scores
from services.learner.reaction import Reactions
from services.learner.window_metric import WindowMetric, rolling
from shared.messages import Prediction
from shared.models import ModelAdapter, build_model
from shared.models.river_factory import build_metric, default_metric
from shared.models.vw_model import VWModel
from shared.rollout.state import Decision, Rollout, RolloutError
from shared.spec import LabelSettings, PipelineSpec
from shared.spec.labels import check_label


@dataclass(slots=True)
class Pending:
    """A scored event waiting for its label: the frozen features and what each model said."""

    x: dict[str, Any]
    scores: Scores
    seq: int
    entity: str
    ts: float
    version: int  # the model version that made the predictions


MetricUpdate = tuple[Callable[[Any, Any], Any], bool]  # (metric.update, wants the proba map)
MetricPlan = tuple[tuple[MetricUpdate, ...], ...]  # per model, in the spec's order


@dataclass(frozen=True, slots=True)
class Step:
    """One model's per-record calls, bound once (see `LearnerCore.plan`)."""

    name: str
    predict: Callable[[Mapping[str, Any]], tuple[Any, Any]]
    learn: Callable[[Mapping[str, Any], Any], None]
    predict_learn: Callable[[Mapping[str, Any], Any], tuple[Any, Any]]
    paused: bool = False  # an operator paused its learning (the API): it only predicts


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
    # False when the caller keeps the metrics itself (the service: off the model process).
    track_metrics: bool = True
    # The spec's reaction to concept drift (reaction.py); None without one. Checkpointed.
    reactions: Reactions | None = None
    # Where the last calls reacted, drained by the caller (so never checkpointed).
    marks: list[AnyMark] = field(default_factory=list)
    # Models whose learning an operator paused (the API's pause/resume; the service reads
    # the set from Redis). They predict and their metrics go on; labels teach them nothing.
    paused: frozenset[str] = frozenset()
    labels_skipped_paused: int = 0
    # The spec's serving.rollout (shared/rollout/state.py): who serves, the challenger's
    # test and its decisions, put in `marks` as ("rollout", event_id, decision). Checkpointed.
    rollout: Rollout | None = None
    # The metrics' series over the stream, kept by the service beside `metrics` (None in a
    # core that never went through a service's checkpoint). Checkpointed.
    history: MetricHistory | None = None
    # The bound calls of each model, rebuilt after a restore or a model swap (never pickled).
    _plan: tuple[Step, ...] | None = field(default=None, init=False, repr=False, compare=False)
    _metric_plan: MetricPlan = field(default=(), init=False, repr=False, compare=False)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_plan"] = None
        state["marks"] = []
        state["track_metrics"] = True  # a restored core is whole; a service opts out again
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state.pop("outbox", None)  # a checkpoint from before the outputs left the core
        state.setdefault("reactions", None)  # a checkpoint from before reactions existed
        state.setdefault("marks", [])
        state.setdefault("paused", frozenset())
        state.setdefault("labels_skipped_paused", 0)
        state.setdefault("rollout", None)
        state.setdefault("history", None)
        self.__dict__.update(state)

    @property
    def plan(self) -> tuple[Step, ...]:
        """Per model, in spec order: predict, learn and metric updates bound once, not
        looked up per record (a Rolling metric's attribute lookups alone cost a microsecond
        a record)."""
        plan = self._plan
        if plan is None:
            for name in self.models:
                self.learned.setdefault(name, 0)
            plan = self._plan = tuple(
                Step(name, model.predict, model.learn, model.predict_learn, name in self.paused)
                for name, model in self.models.items()
            )
            self._metric_plan = metric_plan(self.metrics)
        return plan

    @property
    def model_names(self) -> tuple[str, ...]:
        return tuple(self.models)

    @property
    def vw_text(self) -> bool:
        """Every model is Vowpal Wabbit: `x` may be VW's text of the features
        (`features_text`), which a service formats before the model process sees it."""
        return all(isinstance(m, VWModel) for m in self.models.values())

    def set_paused(self, models: frozenset[str]) -> None:
        """The models whose learning is paused from the next record on (unknown names are
        ignored: the set in Redis may name a model of another spec version)."""
        paused = frozenset(models) & frozenset(self.models)
        if paused != self.paused:
            self.paused = paused
            self._plan = None

    def replace_model(
        self, name: str, model: ModelAdapter, metrics: list[Any], learned: int
    ) -> None:
        """Rollback: one model and its metrics continue from an older state."""
        self.models[name] = model
        self.metrics[name] = metrics
        self.learned[name] = learned
        if self.reactions is not None:  # a trial or detector of the replaced state is moot
            self.reactions.forget(name)
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
        core = cls(spec.name, spec.task, models, metrics, spec.labels)
        core.reactions = Reactions.from_spec(spec)
        rollout = spec.serving.rollout
        if rollout is not None:
            core.rollout = Rollout.from_spec(rollout, spec.champion, spec.task)
        return core

    def score(
        self, event_id: str, entity: str, ts: float, x: dict[str, Any], label: Any
    ) -> tuple[Scores, list[Joined]]:
        """Predict with every model, then learn from the inline label if there is one.
        Returns each model's (prediction, proba) and the other predictions that met their
        label (an early one, expired ones with the default); the inline pair is the
        caller's to report, it has everything it needs.

        `x` is `features(data)` (or its VW text, see `vw_text`) and the label passed
        `check_label`: the caller's side of a model process does both."""
        plan = self._plan or self.plan
        joined: list[Joined] = []
        reactions = self.reactions
        if (
            label is not None
            and len(plan) == 1
            and not self.paused
            and (reactions is None or not reactions.trials)
        ):
            # One model, the commonest pipeline: predict and learn in one call (one pass for
            # VW). With several, all predict before any learns, so a record one of them
            # cannot take (dead-lettered) teaches none of them. (A fallback on trial needs
            # the steps apart: it predicts before the model learns.)
            step = plan[0]
            scores: Scores = (step.predict_learn(x, label),)
            self.events_seen += 1
            if self.early:  # the inline label wins over an early one
                self.early.pop(event_id, None)
            if self.track_metrics:
                update_metrics(self._metric_plan, label, scores)
            self.learned[step.name] += 1
            self.labels_learned += 1
            if reactions is not None:
                self._react(plan, event_id, label, scores)
            if self.pending or self.early:
                self._expire(joined)
            return scores, joined
        scores = (plan[0].predict(x),) if len(plan) == 1 else tuple([s.predict(x) for s in plan])
        self.events_seen += 1
        if self.rollout is not None:
            self.rollout.note_scores(self.models, scores)
        early = self.early.pop(event_id, None) if self.early else None
        if label is not None:
            self._learn(plan, x, label, scores, event_id)
        elif early is not None:
            self._learn(plan, x, early[0], scores, event_id)
            joined.append((event_id, entity, ts, self.model_version, scores, early[0], "topic", 0))
        else:
            self.pending.pop(event_id, None)
            self.pending[event_id] = Pending(
                x, scores, self.events_seen, entity, ts, self.model_version
            )
        if self.pending or self.early:
            self._expire(joined)
        return scores, joined

    def direct_step(self) -> Step | None:
        """The one model's step when `score` of a labelled event would only call its
        `predict_learn` and count: one model, learning, no reaction to drift, no metrics
        kept here, no prediction or label waiting. Then a caller may call it itself and
        count the run with `count_direct` before any other call (serve_batch: `score`'s
        call and checks per record were 2.4% of the model process's instructions,
        callgrind)."""
        plan = self._plan or self.plan
        if (
            len(plan) == 1
            and not self.paused
            and self.reactions is None
            and not self.track_metrics
            and not self.pending
            and not self.early
        ):
            return plan[0]
        return None

    def count_direct(self, step: Step, n: int) -> None:
        """`n` labelled events scored and learned by `step.predict_learn` (`direct_step`):
        the counters `score` would have kept."""
        self.events_seen += n
        self.labels_learned += n
        self.learned[step.name] += n

    def join(self, event_id: str, label: Any) -> tuple[str, list[Joined]]:
        """Join a delayed label with its pending prediction: "joined", or "early" if the
        event has not been seen (it may yet come; past the horizon the label is unmatched)."""
        check_label(label, self.task)
        waiting = self.pending.pop(event_id, None)
        if waiting is None:
            self.early.pop(event_id, None)
            self.early[event_id] = (label, self.events_seen)
            return "early", []
        lag = self.events_seen - waiting.seq
        self._learn(self.plan, waiting.x, label, waiting.scores, event_id)
        w = waiting
        return "joined", [(event_id, w.entity, w.ts, w.version, w.scores, label, "topic", lag)]

    def _expire(self, joined: list[Joined]) -> None:
        """Past the horizon, predictions get the default label (or none); labels give up."""
        oldest_kept = self.events_seen - self.labels.horizon_events
        while self.early and next(iter(self.early.values()))[1] <= oldest_kept:
            self.early.popitem(last=False)
            self.labels_unmatched += 1
        while self.pending:
            event_id, w = next(iter(self.pending.items()))
            if w.seq > oldest_kept:
                return
            del self.pending[event_id]
            default = self.labels.default
            if default is None:
                self.expired_unlabelled += 1
            else:
                lag = self.events_seen - w.seq
                self._learn(self.plan, w.x, default, w.scores, event_id)
                joined.append(
                    (event_id, w.entity, w.ts, w.version, w.scores, default, "default", lag)
                )
                self.expired_defaulted += 1

    def _learn(
        self,
        plan: tuple[Step, ...],
        x: Mapping[str, Any],
        label: Any,
        scores: Scores,
        event_id: str,
    ) -> None:
        """Score the predictions made before, learn once on the frozen features."""
        learned = self.learned
        if self.track_metrics:
            update_metrics(self._metric_plan, label, scores)
        rollout = self.rollout
        if rollout is not None and rollout.test is not None:
            decision = rollout.observe(self.models, label, scores)
            if decision is not None:
                self.marks.append(("rollout", event_id, decision))
        reactions = self.reactions
        if reactions is not None and reactions.trials:
            reactions.try_fresh(self.models, x, label, self.paused)
        for step in plan:
            if step.paused:
                self.labels_skipped_paused += 1
                continue
            step.learn(x, label)
            learned[step.name] += 1
        self.labels_learned += 1
        if reactions is not None:
            self._react(plan, event_id, label, scores)

    def _react(self, plan: tuple[Step, ...], event_id: str, label: Any, scores: Scores) -> None:
        """After the models learned a label: trials that are over, then each learning
        model's error into its concept detector (reaction.py). A paused model is left as
        the operator left it."""
        reactions = self.reactions
        assert reactions is not None
        models = self.models
        replaced = bool(reactions.trials) and reactions.settle_trials(models)
        predictions = [
            (s.name, score[0]) for s, score in zip(plan, scores, strict=True) if not s.paused
        ]
        if reactions.observe(models, event_id, label, predictions, self.marks) or replaced:
            self._plan = None  # the next record binds the new models' calls

    def apply_rollout(self, request: Mapping[str, Any]) -> Decision:
        """An operator's rollout request: its decision, or {"refused": why} (never raises:
        this may run in the model process)."""
        if self.rollout is None:
            return {"refused": "the spec has no serving.rollout section"}
        try:
            decision = self.rollout.apply(request, tuple(self.models))
        except RolloutError as exc:
            return {"refused": str(exc)}
        return {**decision, "model_version": self.model_version}

    def metric_values(self) -> dict[str, dict[str, float]]:
        return metric_values(self.metrics)


def metric_values(metrics: Mapping[str, list[Any]]) -> dict[str, dict[str, float]]:
    """Per model: prequential metrics over the whole stream and over the rolling window."""
    return {model: {metric_name(m): float(m.get()) for m in ms} for model, ms in metrics.items()}


def metric_plan(metrics: Mapping[str, list[Any]]) -> MetricPlan:
    """Each model's metric updates, bound once."""
    return tuple(tuple((m.update, wants_proba(m)) for m in ms) for ms in metrics.values())


def update_metrics(plan: MetricPlan, label: Any, scores: Scores) -> None:
    """Each model's metrics with the prediction it made before the label came."""
    for updates, (prediction, proba) in zip(plan, scores):  # noqa: B905 (same length)
        if prediction is not None:  # as River's progressive_val_score: no guess, no score
            for update, wants in updates:
                update(label, dict(proba) if wants and proba is not None else prediction)


def metric_name(metric: Any) -> str:
    if isinstance(metric, utils.Rolling | WindowMetric):
        return f"{type(metric.obj).__name__} (last {metric.window_size})"
    return type(metric).__name__


def wants_proba(metric: Any) -> bool:
    """Probabilistic metrics (e.g. LogLoss) take the probability map, the others labels."""
    return not getattr(metric, "requires_labels", True)


def metric_input(metric: Any, p: Prediction) -> Any:
    """Labels for label metrics, the probability map for probabilistic ones."""
    if not wants_proba(metric) or p.proba is None:
        return p.prediction
    return dict(p.proba)
