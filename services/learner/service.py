"""The learner's Kafka loop.

Records from the events and labels topics are decoded as they arrive, then released in
deterministic order by `OrderedMerge`; each released batch goes to the model worker
(worker.py: a model process, or this thread), which scores and joins it, and the results
come back as records to produce. Checkpoints (checkpointing.py) wait for every result in
flight and flush the outputs, then persist the state with the next input offsets; after a
crash the learner resumes from the last one and re-emits identical outputs, which
downstream drops by lineage.
"""

from __future__ import annotations

import collections
import gc
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec
import redis
from confluent_kafka import OFFSET_BEGINNING, TIMESTAMP_NOT_AVAILABLE, Message
from prometheus_client import Counter, Gauge, Histogram

from services.learner.checkpointing import PIPELINE, LearnerState, LearnerStateKind
from services.learner.core import (
    LearnerCore,
    MetricPlan,
    metric_plan,
    metric_values,
    model_input,
    update_metrics,
)
from services.learner.outputs import mark_records, outcomes
from services.learner.worker import (
    EVENT,
    FAILED,
    LABEL,
    SCORED,
    Item,
    ModelWorker,
    WorkerError,
)
from shared.checkpoint.codec import CheckpointFormatError, CheckpointTamperedError
from shared.checkpoint.lease import Lease
from shared.checkpoint.store import CheckpointStore
from shared.codec import CodecError, decode, encode
from shared.gc_tuning import hot_path_gc
from shared.kafka import BatchConsumer, SafeProducer
from shared.kafka.lag import ConsumerLag
from shared.kafka.position import position
from shared.keys import PipelineKeys
from shared.messages import (
    Event,
    FeatureRecord,
    Label,
    Lineage,
    MessageError,
    Outcome,
    Prediction,
)
from shared.messages.fast_event import WireEvent, fast_valid_wire
from shared.metrics import LATENCY_BUCKETS, BulkHistogram, ServiceMetrics, StreamMetrics
from shared.ordering import OrderedMerge, OrderKey
from shared.redis_store import RedisStore
from shared.runtime.checkpoints import Checkpoints
from shared.runtime.dead_letters import DeadLetters
from shared.runtime.ownership import FencedError, Owned, Ownership
from shared.runtime.status import StatusWriter
from shared.settings import Settings
from shared.spec.labels import check_label

log = logging.getLogger(__name__)

SERVICE = "learner"
LABEL_RANK, EVENT_RANK = 0, 1  # a label sorts before an event of the same time (simulate_qa)
# A replayed backlog is minutes behind its Kafka timestamps: the latency buckets go on.
EVENT_TO_PREDICTION_BUCKETS = (*LATENCY_BUCKETS, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0)
LABEL_LAG_BUCKETS = (0, 1, 5, 10, 50, 100, 500, 1000, 5000)
LATENCY_SAMPLES_KEPT = 64  # per input partition, sampled records waiting for their prediction
LATENCY_SCAN = 256  # how far back a published batch is searched for sampled partitions


@dataclass
class LearnerMetrics:
    stream: StreamMetrics  # records, records_out, dead letters, batch time, lag, checkpoints
    predictions: Counter
    labels: Counter
    model_metric: Gauge
    pending: Gauge
    event_to_prediction: Histogram
    label_lag: BulkHistogram

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
        )


@dataclass(frozen=True, slots=True)
class Rejected:
    """An input record that will be dead-lettered when the merge releases it."""

    raw: bytes | None
    reason: str
    message: str


class Buffered(msgspec.Struct, frozen=True):
    """A decoded input record waiting in the ordered merge (a Struct: one is built per
    input record, and a frozen dataclass's __init__ cost a microsecond)."""

    lineage: Lineage
    item: WireEvent | Event | Label | Rejected  # WireEvent: an event/v1 by the fast path
    raw: bytes | None
    key: bytes | None
    source: Lineage | None = None  # for features records: the event they were computed from


class LearnerService:
    """One pipeline's learner: standby until it holds the lease, then the only owner of
    every input partition, checkpointing as it goes (see checkpointing.py)."""

    def __init__(
        self,
        fresh: LearnerCore,
        consumer: BatchConsumer,
        producer: SafeProducer,
        settings: Settings,
        store: RedisStore,
        checkpoints: CheckpointStore,
        lease: Lease,
        input_partitions: dict[str, int],
        metrics: LearnerMetrics,
        merge: OrderedMerge[Buffered],
        start_worker: Callable[[], ModelWorker],
        status_interval_s: float = 1.0,
    ) -> None:
        self.state = LearnerState(fresh)
        self.ownership = Ownership(LearnerStateKind(checkpoints, fresh))
        self._unit: Owned[LearnerState] | None = None  # the state, once this one is active
        self._fresh = fresh  # the spec's models, unfed: small
        self._start_worker = start_worker
        self.worker: ModelWorker | None = None
        # What records are built from: fixed by the spec, checked on every restore.
        self._names = tuple(fresh.models)
        self._pipeline, self._task = fresh.pipeline, fresh.task
        self.events_seen = 0  # scored events whose outputs were produced (bench, logs)
        # Set on taking ownership, from the restored state:
        self._metrics: dict[str, list[Any]] = {}
        self._metric_plan: MetricPlan = ()
        self._vw_text = False
        self._gc_thresholds: tuple[int, int, int] | None = None
        self.consumer = consumer
        self.producer = producer
        self.settings = settings
        self.store = store
        # As last applied to the worker; None: not yet since this instance became active.
        self._paused_models: frozenset[str] | None = None
        self.checkpoint_store = checkpoints
        # A standby owns nothing: its checkpoint age stays 0, not an alert.
        self.checkpoints = Checkpoints(
            self.ownership,
            metrics.stream.checkpoint,
            settings.checkpoint_every_records,
            settings.checkpoint_interval_s,
            producer.flush,
            consumer.store,
        )
        self.dead_letters = DeadLetters(
            SERVICE, settings.topics.events_dlq, metrics.stream, producer.produce
        )
        self.status = StatusWriter(
            store.client, PipelineKeys(fresh.pipeline).learner_status, ttl_s=None
        )
        self.lease = lease
        self.input_partitions = input_partitions
        self.metrics = metrics
        self.merge = merge
        self.status_interval_s = status_interval_s
        self.max_buffered = 20 * settings.batch_size
        self._events_topic = settings.topics.events_valid
        self._max_bytes = settings.max_message_bytes
        self.role = "standby"
        self._paused: set[tuple[str, int]] = set()
        self._last_order: dict[tuple[str, int], tuple[float, int, int, int]] = {}
        self._status_at = 0.0
        self._renewed_at = 0.0
        # Per-record counts, added to the Prometheus counters once per release (cheaper).
        self._tally: collections.Counter[tuple[str, str]] = collections.Counter()
        self._scored = 0  # events scored (one prediction per model each) since the last tally
        self._inline_labels = 0
        # Outputs of the batch being published: (value, key) per record.
        self._predictions: list[tuple[bytes, bytes | None]] = []
        self._outcomes: list[tuple[bytes, bytes | None]] = []
        self._label_lags: list[int] = []  # of the labels joined since the last tally
        self._counters: dict[tuple[str, str], Counter] = {}  # the tally's, bound once
        self.lag = ConsumerLag(metrics.stream.consumer_lag)
        # Latency samples: per input partition of events, (offset, Kafka timestamp in s) of
        # sampled records, observed once a published batch has passed their offset.
        self._source_topic = next(
            (t for t in input_partitions if t != settings.topics.labels_valid), None
        )
        self._samples: dict[tuple[str, int], collections.deque[tuple[int, float]]] = {}

    @property
    def core(self) -> LearnerCore:
        """The state as of the last restore or checkpoint. With a model process, where the
        live state is, it is the spec's core instead, its models never fed, once the
        restored or checkpointed copy has gone there or to Redis (keeping that copy here
        doubled the models' memory); read the live counters with `worker.status()`."""
        return self.state.core

    def _worker(self) -> ModelWorker:
        assert self.worker is not None, "not active: no model worker"
        return self.worker

    def run(self, stop: threading.Event) -> None:
        """Wait for the lease, restore, then consume until `stop`; checkpoint on the way out."""
        log.info("learner starting", extra={"fields": {"pipeline": self.core.pipeline}})
        fenced = False
        try:
            if not self.wait_for_lease(stop):
                return
            self.take_ownership()
            while not stop.is_set():
                self.step()
            version = self.checkpoint("shutdown")
            log.info("final checkpoint written", extra={"fields": {"version": version}})
        except FencedError:
            fenced = True
            raise
        finally:
            self.close(fenced)

    def wait_for_lease(self, stop: threading.Event) -> bool:
        """Hot standby: poll the lease until the active learner is gone (or we are stopped)."""
        announced = False
        while not stop.is_set():
            if self.lease.try_acquire():
                self._renewed_at = time.monotonic()
                return True
            if not announced:
                log.info(
                    "standby: another learner holds the lease",
                    extra={"fields": {"holder": self.lease.holder()}},
                )
                announced = True
            stop.wait(min(0.5, self.settings.lease_ttl_s / 4))
        return False

    def take_ownership(self) -> None:
        """New epoch first (fencing any older owner), then restore and seek."""
        unit = self._unit = self.ownership.take(PIPELINE)
        self.state, version, epoch = unit.state, unit.restored_version, unit.epoch
        if self.worker is None:
            self.worker = self._start_worker()
        core = self.state.core
        # The metrics are kept here, from the results, off the model process's core.
        self._metrics = core.metrics
        self._metric_plan = metric_plan(self._metrics)
        self._vw_text = core.vw_text
        self.worker.load(core)
        self.events_seen = core.events_seen
        if self.worker.apart:
            self.state.core = self._fresh
        del core  # not frozen below: with a model process, this copy is to be freed
        # What exists now (imports, clients, the restored state) lives as long as the
        # service: kept out of the collector's full passes, which otherwise stall this
        # thread ~50 ms every few tens of thousands of records (and the model process
        # waits for it meanwhile).
        gc.freeze()
        previous_gc = hot_path_gc()  # set back on close: tests and benches share the process
        self._gc_thresholds = self._gc_thresholds or previous_gc
        positions = {
            (topic, p): self.state.offsets.get((topic, p), OFFSET_BEGINNING)
            for topic, n in self.input_partitions.items()
            for p in range(n)
        }
        self.consumer.assign(positions)
        self.merge.set_inputs(positions)
        self.worker.wait = self._keep_lease
        self.role = "active"
        self._status_at = 0.0
        self._paused_models = None
        log.info(
            "learner active",
            extra={
                "fields": {"epoch": epoch, "restored_version": version, "inputs": len(positions)}
            },
        )

    def step(self) -> None:
        batch = self.consumer.poll_batch(self.settings.batch_size, self.settings.poll_timeout_s)
        if batch:
            self._sample(batch[0])
            if len(batch) > 1:
                self._sample(batch[-1])
        for msg in batch:
            self.buffer(msg)
        self.release()
        # after release, so an input drained by it is resumed before the next poll
        self._apply_backpressure()
        self.producer.poll()
        self.lag.update(self.consumer, self._handled)
        if self.checkpoints.due():
            self._keep_lease(force=True)  # a long checkpoint must not let it lapse
            try:
                self.checkpoint("cadence")
            except redis.RedisError as exc:
                self.checkpoints.retry_later(exc)
            self._keep_lease(force=True)
        self._keep_lease()
        if self._publish_status(force=False):
            try:
                request = self.checkpoint_store.take_rollback()
            except redis.RedisError as exc:
                log.warning("rollback requests not read", extra={"fields": {"error": str(exc)}})
                return
            if request is not None:
                self.apply_rollback(request)
            self._follow_pauses()

    def _follow_pauses(self) -> None:
        """The models an operator paused (the API writes the set): applied between two
        batches, so a pause never splits one."""
        try:
            raw: set[bytes] = self.store.client.smembers(  # type: ignore[assignment]
                PipelineKeys(self._pipeline).learner_paused
            )
        except redis.RedisError as exc:
            log.warning("paused models not read", extra={"fields": {"error": str(exc)}})
            return
        paused = frozenset(m.decode() for m in raw) & frozenset(self._names)
        if paused == self._paused_models:
            return
        self.publish(block=True)
        self._worker().set_paused(paused)
        changed = self._paused_models is not None or paused
        self._paused_models = paused
        if not changed:
            return
        log.info("paused models changed", extra={"fields": {"paused": sorted(paused)}})
        # Checkpointed at once, as a rollback is: a replay after a crash must pause at the
        # same record, not wherever the next status tick falls.
        try:
            self.checkpoint(f"paused {','.join(sorted(paused)) or 'none'}")
        except redis.RedisError as exc:
            log.error(
                "pause applied but not yet checkpointed; the next checkpoint records it",
                extra={"fields": {"error": str(exc)}},
            )

    def checkpoint(self, reason: str) -> int:
        """Every submitted record's outputs produced, then the worker's state persisted (the
        runtime's sequence, timed from here: the whole pause, with the wait for the batches
        in flight and the snapshot)."""
        started = time.perf_counter()
        self.publish(block=True)
        worker = self._worker()
        snapshot = worker.snapshot()
        snapshot.metrics = self._metrics
        self.state.core = snapshot
        try:
            version = self.checkpoints.checkpoint([PIPELINE], reason, started)[PIPELINE]
            worker.set_version(version)
        finally:
            if worker.apart:  # persisted, or retried from a new snapshot: the live state is
                self.state.core = self._fresh  # in the model process
        return version

    def _handled(self) -> dict[tuple[str, int], int]:
        """The next offset to release per input partition (for the consumer lag)."""
        return self.state.offsets

    def _sample(self, msg: Message) -> None:
        """Keep an events record's Kafka timestamp, for event_to_prediction_seconds."""
        topic = msg.topic()
        if topic != self._source_topic or topic is None:
            return
        kind, ts_ms = msg.timestamp()
        partition, offset = msg.partition(), msg.offset()
        if kind == TIMESTAMP_NOT_AVAILABLE or partition is None or offset is None:
            return
        samples = self._samples.get((topic, partition))
        if samples is None:
            samples = self._samples[(topic, partition)] = collections.deque(
                maxlen=LATENCY_SAMPLES_KEPT
            )
        samples.append((offset, ts_ms / 1000))

    def _observe_latency(self, metas: list[Buffered]) -> None:
        """The outputs of `metas` were just handed to the producer, and with them those of
        every earlier record of their partitions: each sampled record among those is
        observed (from the batch's last records back, at most LATENCY_SCAN of them)."""
        samples = self._samples
        wanted = {key for key, waiting in samples.items() if waiting}
        if not wanted:
            return
        now = time.time()
        observe = self.metrics.event_to_prediction.observe
        for record in reversed(metas[-LATENCY_SCAN:]):
            lineage = record.lineage
            key = (lineage.topic, lineage.partition)
            if key in wanted:
                wanted.discard(key)
                waiting = samples[key]
                while waiting and waiting[0][0] <= lineage.offset:
                    observe(now - waiting.popleft()[1])
                if not wanted:
                    return

    def apply_rollback(self, request: dict[str, Any]) -> None:
        """`headwater models rollback`: one model (and its metrics) continues from an older
        checkpoint; the other models and the input position are untouched."""
        model, version = str(request.get("model")), int(request.get("version", -1))
        try:
            _, old = self.checkpoint_store.load(version)
        except (
            LookupError,
            CheckpointTamperedError,
            CheckpointFormatError,
            redis.RedisError,
        ) as exc:
            log.error("rollback refused", extra={"fields": {"model": model, "error": str(exc)}})
            return
        if model not in self._names or model not in old.core.models:
            log.error("rollback refused: unknown model", extra={"fields": {"model": model}})
            return
        self.publish(block=True)
        metrics = old.core.metrics[model]
        self._worker().replace_model(
            model, old.core.models[model], metrics, old.core.learned.get(model, 0)
        )
        self._metrics[model] = metrics
        self._metric_plan = metric_plan(self._metrics)
        try:
            new_version = self.checkpoint(f"rollback {model} to v{version}")
        except redis.RedisError as exc:
            log.error(
                "rollback applied but not yet checkpointed; the next checkpoint records it",
                extra={"fields": {"model": model, "to": version, "error": str(exc)}},
            )
            return
        log.info(
            "model rolled back",
            extra={"fields": {"model": model, "to": version, "checkpoint": new_version}},
        )

    def _keep_lease(self, force: bool = False) -> None:
        """Renew every third of the TTL. A lease that lapsed while nobody else took over
        (a long pause) is taken back; if someone did, this learner is fenced."""
        now = time.monotonic()
        if not force and now - self._renewed_at < self.settings.lease_ttl_s / 3:
            return
        try:
            renewed = self.lease.renew()
        except redis.RedisError as exc:
            if now - self._renewed_at >= self.settings.lease_ttl_s:
                raise FencedError(
                    f"Redis unreachable for {now - self._renewed_at:.1f} s: the lease cannot be "
                    f"renewed, so another learner may own the pipeline ({exc})"
                ) from exc
            log.warning("lease renewal failed; retrying", extra={"fields": {"error": str(exc)}})
            return
        if not renewed:
            assert self._unit is not None
            epoch, store = self._unit.epoch, self.checkpoint_store
            if store.current_epoch() != epoch:
                raise FencedError("the lease was lost: another learner took over this pipeline")
            if not self.lease.try_acquire():
                raise FencedError("the lease was lost: another learner holds it")
            if store.current_epoch() != epoch:
                self.lease.release()  # taken over in between: leave it to the new owner
                raise FencedError("the lease was lost: another learner took over this pipeline")
            log.warning("lease had lapsed with no other owner; taken back")
        self._renewed_at = now

    def close(self, fenced: bool) -> None:
        try:
            if self.role == "active" and not fenced:
                try:
                    self._publish_status(force=True)
                except WorkerError as exc:  # already reported by the failure that stops us
                    log.warning("last status not published", extra={"fields": {"error": str(exc)}})
            if fenced:
                self.producer.flush()  # outputs are deterministic: duplicates drop by lineage
            self.producer.close()
        finally:
            if self.worker is not None:
                self.worker.close()
            self.consumer.close()
            if self._gc_thresholds is not None:
                gc.set_threshold(*self._gc_thresholds)
            if not fenced:
                try:
                    self.lease.release()
                except redis.RedisError as exc:  # it lapses by itself after its TTL
                    log.warning("lease not released", extra={"fields": {"error": str(exc)}})
            log.info(
                "learner stopped",
                extra={
                    "fields": {
                        "role": self.role,
                        "events": self.events_seen,
                        "dead_letters": self.dead_letters.sent,
                    }
                },
            )

    def buffer(self, msg: Message) -> None:
        """Decode and validate now; order and apply later."""
        topic, partition, offset = position(msg)
        raw = msg.value()
        key = msg.key()
        if type(key) is not bytes:
            key = None
        # the commonest record, decoded and checked in one C pass
        # The decoded Struct itself is the event: building an Event from it costs 3% of this
        # thread.
        item = fast_valid_wire(raw, self._max_bytes) if topic == self._events_topic else None
        if item is not None:
            order: OrderKey = (item.ts, EVENT_RANK, partition, offset)
            buffered = Buffered(Lineage(topic, partition, offset), item, raw, key)
        else:
            full, order, source = self._decode(topic, partition, offset, raw)
            buffered = Buffered(Lineage(topic, partition, offset), full, raw, key, source)
        self._last_order[(topic, partition)] = order
        self.merge.push((topic, partition), order, buffered)

    def _decode(
        self, topic: str, partition: int, offset: int, raw: bytes | None
    ) -> tuple[Event | Label | Rejected, OrderKey, Lineage | None]:
        """The full route: any input kind, any defect named by its reason code."""
        item: Event | Label | Rejected
        source = None
        try:
            obj = decode(raw, self.settings.max_message_bytes)
            if topic == self.settings.topics.labels_valid:
                item = Label.from_wire(obj)
                order = (item.ts, LABEL_RANK, partition, offset)
            elif topic == self.settings.topics.features:
                record = FeatureRecord.from_wire(obj)
                e = record.event
                item = Event(e.event_id, e.entity, e.ts, record.features, e.label)
                source = record.lineage
                order = (item.ts, EVENT_RANK, partition, offset)
            else:
                item = Event.from_wire(obj)
                order = (item.ts, EVENT_RANK, partition, offset)
        except (CodecError, MessageError) as exc:
            item = Rejected(raw, exc.reason, str(exc))
            # right after its predecessor, so offsets are stored in partition order
            previous = self._last_order.get((topic, partition), (float("-inf"), 0, 0, 0))
            order = (previous[0], previous[1], partition, offset)
        return item, order, source

    def release(self) -> None:
        """Send what the merge releases to the model worker, in order; its offsets become
        part of the next checkpoint. Records the learner itself rejects are dead-lettered
        here; the results of earlier batches are published as they come back."""
        offsets = self.state.offsets
        hwm = self.state.source_hwm
        task, vw_text = self._task, self._vw_text
        items: list[Item] = []
        metas: list[Buffered] = []
        applied = 0
        for record in self.merge.pop_ready():
            lineage, item = record.lineage, record.item
            offsets[(lineage.topic, lineage.partition)] = lineage.offset + 1
            applied += 1
            if record.source is not None:
                upstream = (record.source.topic, record.source.partition)
                if record.source.offset <= hwm.get(upstream, -1):
                    self._tally[("records", "duplicate")] += 1
                    continue  # re-emitted by a restarted features service: applied already
                hwm[upstream] = record.source.offset
            if type(item) is WireEvent or isinstance(item, Event):  # the commonest first
                label = item.label
                if label is not None:
                    try:
                        check_label(label, task)
                    except MessageError as exc:
                        record = Buffered(
                            lineage,
                            Rejected(record.raw, exc.reason, str(exc)),
                            record.raw,
                            record.key,
                        )
                        metas.append(record)
                        continue
                x = model_input(item.data, vw_text)  # on this core, not the model process's
                items.append((EVENT, item.event_id, item.entity, item.ts, x, label))
            elif isinstance(item, Label):
                items.append((LABEL, item.event_id, item.label))
            # a Rejected record goes with the batch too, so dead letters stay in input order
            metas.append(record)
        if metas:
            self._worker().submit(items, metas, self._keep_lease)
        if applied:
            assert self._unit is not None
            self._unit.unsaved += applied
        self.publish(block=False)

    def publish(self, block: bool) -> None:
        """Produce the outputs of the batches the worker has finished (all of them if
        `block`), in submission order."""
        for metas, version, results in self._worker().results(block, self._keep_lease):
            started = time.perf_counter()
            self._predictions.clear()
            self._outcomes.clear()
            try:
                self._build(metas, version, results)
            finally:
                # Even when failing: outputs are deterministic, duplicates drop by lineage.
                topics = self.settings.topics
                self.producer.produce_all(topics.predictions, self._predictions)
                self.producer.produce_all(topics.outcomes, self._outcomes)
            if self._predictions:
                self._tally[("out", topics.predictions)] += len(self._predictions)
                if self._samples:
                    self._observe_latency(metas)
            if self._outcomes:
                self._tally[("out", topics.outcomes)] += len(self._outcomes)
            self._flush_tally()
            self.metrics.stream.batch_seconds.observe(time.perf_counter() - started)

    def _build(self, metas: list[Buffered], version: int, results: list[Any]) -> None:
        """Records from the worker's results (one per record it was given): a prediction
        per model for each event, an outcome per model for each prediction that met its
        label, dead letters."""
        names, pipeline, task = self._names, self._pipeline, self._task
        predictions, outcomes_out = self._predictions.append, self._outcomes.append
        plan = self._metric_plan
        lags = self._label_lags.append
        scored = inline = 0
        each = iter(results)
        for record in metas:
            if isinstance(record.item, Rejected):
                self.dead_letter(record, record.item.reason, record.item.message)
                continue
            result = next(each)
            kind, first, joined = result[0], result[1], result[2]
            if kind == FAILED:
                self.dead_letter(record, first, joined)
                continue
            lineage = record.lineage
            kept = len(self._predictions), len(self._outcomes)
            try:
                if kind == SCORED:
                    event = record.item
                    assert isinstance(event, WireEvent | Event)
                    event_id, entity, ts = event.event_id, event.entity, event.ts
                    key = entity.encode()
                    label = event.label
                    for name, (pred, proba) in zip(names, first, strict=True):
                        # positional: the field order of prediction/v1 and outcome/v1 (a
                        # Struct encodes as its to_wire())
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
                        predictions((encode(p), key))
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
                for j in joined:
                    lags(j[7])
                    update_metrics(plan, j[5], j[4])
                    j_key = j[1].encode()
                    for o in outcomes(j, names, pipeline, task, lineage):
                        outcomes_out((encode(o), j_key))
                if len(result) > 3:  # the learner reacted to concept drift here
                    mark_records(self._outcomes, kept[1], result[3])
            except (MemoryError, RecursionError):
                raise
            except Exception as exc:
                # A prediction that cannot be written (a model returning an object msgpack
                # cannot take, a metric refusing it): that record's outputs go, it is
                # dead-lettered, the stream goes on.
                del self._predictions[kept[0] :], self._outcomes[kept[1] :]
                log.exception("record not published", extra={"fields": {"offset": lineage.offset}})
                self.dead_letter(record, "model_error", f"{type(exc).__name__}: {exc}")
                continue
            if kind == SCORED:
                scored += 1
                if record.item.label is not None:
                    inline += 1
            else:
                self._tally[("records", f"label_{first}")] += 1
                if first == "joined":
                    self._tally[("labels", "")] += 1
        self.events_seen += scored
        self._scored += scored
        self._inline_labels += inline

    def _flush_tally(self) -> None:
        if self._scored:
            self._tally[("records", "scored")] += self._scored
            for model in self._names:
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

    def dead_letter(self, record: Buffered, reason: str, message: str) -> None:
        """To the dead-letter topic, keyed as the original was."""
        self.dead_letters.send(record.lineage, record.raw, record.key, reason, message)

    def _apply_backpressure(self) -> None:
        """Pause an input that runs far ahead of the others; resume it once drained.

        This also lets a lagging input's records through: the client's prefetch queue is
        one FIFO across partitions, so a large backlog of one input would otherwise be
        consumed before the other input is seen at all. (A pause costs a refetch: librdkafka
        drops the partition's prefetched records; ~0.4 s seen on Tansu.)"""
        for tp in self.consumer.assignment:
            key = (tp.topic, tp.partition)
            size = self.merge.buffered(key)
            if size > self.max_buffered and key not in self._paused:
                self.consumer.pause([key])
                self._paused.add(key)
            elif size <= self.max_buffered // 2 and key in self._paused:
                self.consumer.resume([key])
                self._paused.discard(key)

    def _publish_status(self, force: bool) -> bool:
        """Progress for operators (and the API later): counters and metrics in Redis.

        Once per status interval the model side is asked for its counters behind the
        batches in flight, and they are written when they come back, so the pipeline never
        drains for it (a drain each second stalled both sides); the metrics are the
        learner's own as of then, a batch or so later. `force` (on stopping) drains first
        and writes at once. True when a status was asked for."""
        worker = self._worker()
        if force:
            self.publish(block=True)  # the status counts every record released so far
            self._write_status(worker.status())
            return True
        ready = worker.take_status()
        if ready is not None:
            self._write_status(ready)
        now = time.monotonic()
        if now - self._status_at < self.status_interval_s:
            return False
        self._status_at = now
        worker.request_status()
        return True

    def _write_status(self, status: dict[str, Any]) -> None:
        fields: dict[str, str | int | float] = {"role": self.role, **status}
        fields.update(
            {
                "dead_letters": self.dead_letters.sent,
                "assigned_partitions": len(self.consumer.assignment),
            }
        )
        self.metrics.pending.set(status["pending"])
        for model, ms in metric_values(self._metrics).items():
            for name, value in ms.items():
                fields[f"metric:{model}:{name}"] = value
                self.metrics.model_metric.labels(model, name).set(value)
        self.status.write(fields)
