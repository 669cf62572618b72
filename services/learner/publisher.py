"""The learner's outputs: the model worker's results become predictions, outcomes and dead
letters, produced in submission order; the prequential metrics and the per-record tallies
behind the counters are kept here, where the results are read."""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from services.learner.core import MetricPlan, metric_plan, metric_values, update_metrics
from services.learner.intake import Buffered, Rejected
from services.learner.latency import LatencySamples
from services.learner.metric_history import MetricHistory
from services.learner.outputs import decisions_of, mark_records, outcomes, reactions_of
from services.learner.worker import FAILED, SCORED
from shared.codec import encode
from shared.kafka import SafeProducer
from shared.messages import Event, ModelEvent, Outcome, Prediction
from shared.messages.fast_event import WireEvent
from shared.metrics import LATENCY_BUCKETS, BulkHistogram, ServiceMetrics, StreamMetrics
from shared.rollout.state import Decision, Routing
from shared.runtime.dead_letters import DeadLetters
from shared.settings import TopicNames

log = logging.getLogger(__name__)

# A replayed backlog is minutes behind its Kafka timestamps: the latency buckets go on.
EVENT_TO_PREDICTION_BUCKETS = (*LATENCY_BUCKETS, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0)
LABEL_LAG_BUCKETS = (0, 1, 5, 10, 50, 100, 500, 1000, 5000)

Batch = tuple[list[Buffered], int, list[Any]]  # records, model version, worker results
# Bound once: `WireEvent | Event` in the isinstance call built a union object per record.
_EVENTS = (WireEvent, Event)


@dataclass
class LearnerMetrics:
    stream: StreamMetrics  # records, records_out, dead letters, batch time, lag, checkpoints
    predictions: Counter
    labels: Counter
    model_metric: Gauge
    pending: Gauge
    event_to_prediction: Histogram
    label_lag: BulkHistogram
    rollout_share: Gauge
    rollout_agreement: Gauge
    rollout_decisions: Counter

    @classmethod
    def create(cls, m: ServiceMetrics) -> LearnerMetrics:
        return cls(
            stream=StreamMetrics.create(
                m,
                "scored, dead_lettered, duplicate (features re-emitted after a restart), "
                "label_joined, label_early (a label record before its event)",
            ),
            predictions=m.counter("predictions_total", "Predictions published.", ("model",)),
            labels=m.counter("labels_learned_total", "Labels learned (each by every model)."),
            model_metric=m.gauge("model_metric", "Prequential metric.", ("model", "metric")),
            pending=m.gauge("pending_labels", "Predictions waiting for their label."),
            event_to_prediction=m.histogram(
                "event_to_prediction_seconds",
                "Wall time when a prediction is handed to the producer minus the Kafka "
                "timestamp of its input record; sampled (the first and last record of each "
                "consumed batch).",
                buckets=EVENT_TO_PREDICTION_BUCKETS,
            ),
            label_lag=m.bulk_histogram(
                "label_lag_events",
                "Events scored between a prediction and its label (0: inline).",
                LABEL_LAG_BUCKETS,
            ),
            rollout_share=m.gauge(
                "rollout_challenger_share",
                "Share of entities the challenger serves (the canary's; 0 otherwise).",
            ),
            rollout_agreement=m.gauge(
                "rollout_agreement",
                "Share of events where champion and challenger predicted the same.",
            ),
            rollout_decisions=m.counter(
                "rollout_decisions_total",
                "Rollout decisions: promote, retire, rollback, confirm (the test's); switch, "
                "rollback, set (an operator's).",
                ("kind", "source"),
            ),
        )


class Publisher:
    def __init__(
        self,
        names: tuple[str, ...],
        pipeline: str,
        task: str,
        producer: SafeProducer,
        topics: TopicNames,
        metrics: LearnerMetrics,
        dead_letters: DeadLetters,
        latency: LatencySamples,
        serves: bool = True,
    ) -> None:
        """`serves`: this learner publishes the predictions (the spec's `serving.by`);
        otherwise scorer replicas do, and it publishes outcomes only."""
        self.names, self.pipeline, self.task = names, pipeline, task
        self.serves = serves
        # Who serves each entity (the spec's serving.rollout), as of the record being built:
        # set on taking ownership, changed by the decisions in the results. None: every
        # model's prediction is published.
        self.routing: Routing | None = None
        # The decisions published since the service last took them (Redis, a checkpoint).
        self.decisions: list[ModelEvent] = []
        self.producer = producer
        self.topics = topics
        self.metrics = metrics
        self.dead_letters = dead_letters
        self.latency = latency
        # The prequential metrics, kept here from the results (set on taking ownership).
        self.model_metrics: dict[str, list[Any]] = {}
        self._plan: MetricPlan = ()
        # Their series over the stream (the pipeline page's curves), set on taking
        # ownership and checkpointed with them.
        self.history = MetricHistory()
        self.events_seen = 0  # scored events whose outputs were produced (bench, logs)
        # Per-record counts, added to the Prometheus counters once per batch (cheaper).
        self._tally: collections.Counter[tuple[str, str]] = collections.Counter()
        self._scored = 0  # events scored (one prediction per model each) since the last tally
        self._inline_labels = 0
        self._label_lags: list[int] = []  # of the labels joined since the last tally
        self._counters: dict[tuple[str, str], Counter] = {}  # the tally's, bound once
        # Outputs of the batch being published: (value, key) per record.
        self._predictions: list[tuple[bytes, bytes | None]] = []
        self._outcomes: list[tuple[bytes, bytes | None]] = []
        self._shadow: list[tuple[bytes, bytes | None]] = []
        self._events: list[tuple[bytes, bytes | None]] = []

    def set_model_metrics(self, model_metrics: dict[str, list[Any]]) -> None:
        self.model_metrics = model_metrics
        self._plan = metric_plan(model_metrics)

    def replace_model_metrics(self, model: str, metrics: list[Any]) -> None:
        self.model_metrics[model] = metrics
        self._plan = metric_plan(self.model_metrics)

    def count(self, kind: str, label: str, n: int = 1) -> None:
        """A tally of records (`kind` "records"), added to the counters with the next batch."""
        self._tally[(kind, label)] += n

    def publish(self, batches: Iterable[Batch]) -> None:
        """Produce the outputs of finished batches, in submission order."""
        topics = self.topics
        for records, version, results in batches:
            started = time.perf_counter()
            self._predictions.clear()
            self._outcomes.clear()
            self._shadow.clear()
            self._events.clear()
            try:
                self._build(records, version, results)
            finally:
                # Even when failing: outputs are deterministic, duplicates drop by lineage.
                self.producer.produce_all(topics.predictions, self._predictions)
                self.producer.produce_all(topics.outcomes, self._outcomes)
                self.producer.produce_all(topics.predictions_shadow, self._shadow)
                self.producer.produce_all(topics.model_events, self._events)
            for topic, out in (
                (topics.predictions_shadow, self._shadow),
                (topics.model_events, self._events),
            ):
                if out:
                    self._tally[("out", topic)] += len(out)
            if self._predictions:
                self._tally[("out", topics.predictions)] += len(self._predictions)
                self.latency.observe(records)
            if self._outcomes:
                self._tally[("out", topics.outcomes)] += len(self._outcomes)
            self._flush_tally()
            self.metrics.stream.batch_seconds.observe(time.perf_counter() - started)

    def _build(self, records: list[Buffered], version: int, results: list[Any]) -> None:
        """Records from the worker's results (one per record it was given): a prediction
        per model for each event, an outcome per model for each prediction that met its
        label, dead letters."""
        names, pipeline, task, serves = self.names, self.pipeline, self.task, self.serves
        predictions, outcomes_out = self._predictions.append, self._outcomes.append
        shadows = self._shadow.append
        plan = self._plan
        history = self.history
        lags = self._label_lags.append
        scored = inline = learned = 0
        each = iter(results)
        for record in records:
            if isinstance(record.item, Rejected):
                self.dead_letter(record, record.item.reason, record.item.message)
                continue
            result = next(each)
            kind, first, joined = result[0], result[1], result[2]
            if kind == FAILED:
                self.dead_letter(record, first, joined)
                continue
            lineage = record.lineage
            kept = len(self._predictions), len(self._outcomes), len(self._shadow)
            try:
                if kind == SCORED:
                    event = record.item
                    assert isinstance(event, _EVENTS)
                    event_id, entity, ts = event.event_id, event.entity, event.ts
                    key = entity.encode()
                    label = event.label
                    routing = self.routing
                    served, shadow = routing.route(entity) if routing else (None, None)
                    # Checked here, not by zip(strict=True): its keyword argument alone
                    # cost 1.6% of this thread's instructions (callgrind).
                    if len(first) != len(names):
                        raise ValueError(f"{len(first)} scores for {len(names)} models")
                    for name, (pred, proba) in zip(names, first):  # noqa: B905 (checked)
                        if serves and (served is None or name in (served, shadow)):
                            # positional: the field order of prediction/v1 and outcome/v1
                            # (a Struct encodes as its to_wire())
                            p = Prediction(
                                event_id,
                                entity,
                                ts,
                                pipeline,
                                name,
                                version,
                                task,
                                pred,
                                proba,
                                lineage,
                            )
                            if name == shadow:
                                shadows((encode(p), key))
                            else:
                                predictions((encode(p), key))
                                if served is not None:
                                    self._tally[("predictions", name)] += 1
                        if label is not None:
                            # The inline pair, built here as the prediction is, not by
                            # `outputs.outcomes`: the call, its list and the pair's tuple
                            # cost 8% of this thread's instructions.
                            o = Outcome(
                                event_id,
                                entity,
                                ts,
                                pipeline,
                                name,
                                version,
                                task,
                                pred,
                                proba,
                                label,
                                "inline",
                                0,
                                lineage,
                            )
                            outcomes_out((encode(o), key))
                    if label is not None:  # its metrics before the joined pairs' below
                        update_metrics(plan, label, first)
                learned += len(joined)  # early labels met at scoring, defaults too
                for j in joined:
                    _, j_entity, _, _, j_scores, j_label, _, j_lag = j
                    lags(j_lag)
                    update_metrics(plan, j_label, j_scores)
                    j_key = j_entity.encode()
                    for o in outcomes(j, names, pipeline, task, lineage):
                        outcomes_out((encode(o), j_key))
                if len(result) > 3:  # the learner reacted to concept drift, or decided
                    reactions = reactions_of(result[3])
                    if reactions:
                        mark_records(self._outcomes, kept[1], reactions)
                    for _, decided_at, decision in decisions_of(result[3]):
                        self._decided(decision, version, decided_at, record)
            except (MemoryError, RecursionError):
                raise
            except Exception as exc:
                # A prediction that cannot be written (a model returning an object msgpack
                # cannot take, a metric refusing it): that record's outputs go, it is
                # dead-lettered, the stream goes on.
                del self._predictions[kept[0] :], self._outcomes[kept[1] :], self._shadow[kept[2] :]
                log.exception("record not published", extra={"fields": {"offset": lineage.offset}})
                self.dead_letter(record, "model_error", f"{type(exc).__name__}: {exc}")
                continue
            applied = len(joined)  # labels this record applied to the metrics
            if kind == SCORED:
                scored += 1
                if record.item.label is not None:
                    inline += 1
                    applied += 1
            else:
                self._tally[("records", f"label_{first}")] += 1
            # at the record that completes a run of labels, however records are batched,
            # so a replay takes the same points
            if applied:  # inline, not a method (its call: 3% of this thread)
                history.labels += applied
            if history.labels >= history.next_due:
                history.observe(
                    history.labels,
                    self.events_seen + scored,
                    time.time(),
                    getattr(record.item, "ts", None),
                    metric_values(self.model_metrics),
                )
        self.events_seen += scored
        if learned:
            self._tally[("labels", "")] += learned
        self._scored += scored
        self._inline_labels += inline

    def _flush_tally(self) -> None:
        if self._scored:
            self._tally[("records", "scored")] += self._scored
            if self.serves and self.routing is None:
                for model in self.names:
                    self._tally[("predictions", model)] += self._scored
            self._scored = 0
        if self._inline_labels:
            self._tally[("labels", "")] += self._inline_labels
            self.metrics.label_lag.observe(0, self._inline_labels)
            self._inline_labels = 0
        if self._label_lags:
            self.metrics.label_lag.observe_all(self._label_lags)
            self._label_lags.clear()
        counters = self._counters
        for key, n in self._tally.items():
            counter = counters.get(key)
            if counter is None:
                counter = counters[key] = self._counter(*key)
            counter.inc(n)
        self._tally.clear()

    def _counter(self, kind: str, label: str) -> Counter:
        """The Prometheus counter (child) a tally key adds to."""
        if kind == "labels":
            return self.metrics.labels
        if kind == "predictions":
            return self.metrics.predictions.labels(label)
        stream = self.metrics.stream
        return (stream.records_out if kind == "out" else stream.records).labels(label)

    def _decided(self, decision: Decision, version: int, event_id: str, record: Buffered) -> None:
        """The paired test decided at this record: the routing changes from the next
        event on, and the decision is a model-event/v1 record."""
        ts = getattr(record.item, "ts", None)
        event = ModelEvent.of(self.pipeline, decision, version, event_id, ts, record.lineage)
        self._events.append((encode(event), self.pipeline.encode()))
        self.apply(event)

    def operator_decision(self, decision: Decision) -> ModelEvent:
        """An operator's request, applied between two batches: produced at once."""
        event = ModelEvent.of(self.pipeline, decision, decision["model_version"])
        self.producer.produce(self.topics.model_events, encode(event), self.pipeline.encode())
        self._tally[("out", self.topics.model_events)] += 1
        self.apply(event)
        return event

    def apply(self, event: ModelEvent) -> None:
        self.routing = Routing(event.champion, event.challenger, event.policy, event.share)
        self.decisions.append(event)
        log.info(
            "rollout decision",
            extra={
                "fields": {
                    "kind": event.kind,
                    "source": event.source,
                    "champion": event.champion,
                    "challenger": event.challenger,
                    "policy": event.policy,
                    "event_id": event.event_id,
                }
            },
        )

    def dead_letter(self, record: Buffered, reason: str, message: str) -> None:
        """To the dead-letter topic, keyed as the original was."""
        self.dead_letters.send(record.lineage, record.raw, record.key, reason, message)
