"""The learner's Kafka loop: a short loop composing collaborators that own their state.

  LeaseKeeper (lease_keeper.py)  the ownership policy: the lease holder owns every input
                                 partition; the others wait on hot standby
  Intake (intake.py)             decodes records as they arrive, releases them in order
  ModelWorker (worker.py)        scores and learns each released batch (a model process,
                                 or this thread)
  Publisher (publisher.py)       the results become predictions, outcomes, dead letters
  OperatorControls (controls.py) pauses and rollbacks, between two batches
  the stream runtime (shared/runtime/): the state's epoch, restore and fenced checkpoints

A checkpoint waits for every result in flight, flushes the outputs, then persists the
state with the next input offsets; after a crash the learner resumes from the last one and
re-emits identical outputs, which downstream drops by lineage.
"""

from __future__ import annotations

import gc
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import redis
from confluent_kafka import OFFSET_BEGINNING, KafkaException

from services.learner.checkpointing import PIPELINE, LearnerState, LearnerStateKind
from services.learner.controls import OperatorControls
from services.learner.core import LearnerCore, metric_values
from services.learner.intake import Buffered, Intake
from services.learner.latency import LatencySamples
from services.learner.lease_keeper import LeaseKeeper
from services.learner.metric_history import MetricHistory
from services.learner.publisher import LearnerMetrics, Publisher
from services.learner.worker import ModelWorker, WorkerError
from shared.checkpoint.lease import Lease
from shared.checkpoint.store import CheckpointStore
from shared.gc_tuning import hot_path_gc
from shared.kafka import BatchConsumer, DeliveryError, SafeProducer
from shared.kafka.lag import ConsumerLag
from shared.keys import PipelineKeys
from shared.ordering import OrderedMerge
from shared.redis_store import RedisStore
from shared.rollout.store import RolloutStore
from shared.runtime.checkpoints import Checkpoints
from shared.runtime.dead_letters import DeadLetters
from shared.runtime.ownership import FencedError, Owned, Ownership
from shared.runtime.status import StatusWriter
from shared.settings import Settings
from shared.snapshot import SnapshotStore
from shared.status import LearnerStatus

log = logging.getLogger(__name__)

SERVICE = "learner"


class LearnerService:
    """One pipeline's learner: standby until it holds the lease, then the only owner of
    every input partition, checkpointing as it goes."""

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
        serves: bool = True,
    ) -> None:
        """`serves`: this learner publishes the predictions (see Publisher)."""
        self.consumer = consumer
        self.producer = producer
        self.settings = settings
        self.metrics = metrics
        self.input_partitions = input_partitions
        self.status_interval_s = status_interval_s
        self._fresh = fresh  # the spec's models, unfed: small
        self._start_worker = start_worker
        self.worker: ModelWorker | None = None
        self.role = "standby"
        self.state = LearnerState(fresh)
        self._unit: Owned[LearnerState] | None = None  # the state, once this one is active
        snapshots = SnapshotStore(
            store.client, fresh.pipeline, checkpoints.keys, keep=settings.checkpoints_kept
        )
        self.ownership = Ownership(
            LearnerStateKind(
                checkpoints,
                fresh,
                snapshots,
                [(t, p) for t, n in input_partitions.items() for p in range(n)],
            ),
            consumer.committed,
            settings.reset_state,
        )
        # A standby owns nothing: its checkpoint age stays 0, not an alert.
        self.checkpoints = Checkpoints(
            self.ownership,
            metrics.stream.checkpoint,
            settings.checkpoint_every_records,
            settings.checkpoint_interval_s,
            producer.flush,
            consumer.store,
        )
        self.lease = LeaseKeeper(lease, settings.lease_ttl_s, checkpoints)
        self.intake = Intake(merge, consumer, settings, fresh.task)
        names = tuple(fresh.models)  # what records are built from: checked on every restore
        source_topic = next(
            (t for t in input_partitions if t != settings.topics.labels_valid), None
        )
        self.publisher = Publisher(
            names,
            fresh.pipeline,
            fresh.task,
            producer,
            settings.topics,
            metrics,
            DeadLetters(SERVICE, settings.topics.events_dlq, metrics.stream, producer.produce),
            LatencySamples(source_topic, metrics.event_to_prediction),
            serves=serves,
        )
        self.rollouts = RolloutStore(store.client, fresh.pipeline)
        self.controls = OperatorControls(
            store.client,
            self.rollouts,
            fresh.pipeline,
            names,
            checkpoints,
            self.publisher,
            lambda: self.publish(block=True),
            self.checkpoint,
        )
        self.status = StatusWriter(
            store.client, PipelineKeys(fresh.pipeline).learner_status, ttl_s=None
        )
        self.lag = ConsumerLag(metrics.stream.consumer_lag)
        self._status_at = 0.0
        self._redis = store.client
        self._history_key = PipelineKeys(fresh.pipeline).learner_history
        self._history_written = (0, 0)
        self._label_lag = (0.0, 0, 0.0)  # the label-lag histogram's sum and count, the mean
        self._gc_thresholds: tuple[int, int, int] | None = None

    @property
    def core(self) -> LearnerCore:
        """The state as of the last restore or checkpoint. With a model process, where the
        live state is, it is the spec's core instead, its models never fed, once the
        restored or checkpointed copy has gone there or to Redis (keeping that copy here
        doubled the models' memory); read the live counters with `worker.status()`."""
        return self.state.core

    @property
    def events_seen(self) -> int:
        """Scored events whose outputs were produced (benches, logs)."""
        return self.publisher.events_seen

    def _worker(self) -> ModelWorker:
        assert self.worker is not None, "not active: no model worker"
        return self.worker

    def run(self, stop: threading.Event) -> None:
        """Wait for the lease, restore, then consume until `stop`; checkpoint on the way out."""
        log.info("learner starting", extra={"fields": {"pipeline": self.core.pipeline}})
        fenced = False
        try:
            if not self.lease.wait(stop):
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

    def take_ownership(self) -> None:
        """New epoch first (fencing any older owner), then restore and seek."""
        unit = self._unit = self.ownership.take(PIPELINE)
        self.state = unit.state
        self.lease.epoch = unit.epoch
        if self.worker is None:
            self.worker = self._start_worker()
        core = self.state.core
        # The metrics are kept by the publisher, from the results, off the model process's.
        self.publisher.set_model_metrics(core.metrics)
        self.publisher.history = core.history or MetricHistory(self.settings.history_every)
        self.publisher.events_seen = core.events_seen
        self.publisher.routing = None if core.rollout is None else core.rollout.routing
        self.intake.vw_text = core.vw_text
        self.worker.load(core)
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
        self.intake.merge.set_inputs(positions)
        self.worker.wait = self.lease.keep
        # A standby's first checkpoint comes an interval after it takes over, as the active
        # learner's did: a checkpoint amid the records it emits again would give them
        # another model_version than their first emission, and lineage dedupe would fail
        self.checkpoints.restart_clock()
        self.role = "active"
        self._status_at = 0.0
        self.controls.paused = None
        log.info(
            "learner active",
            extra={
                "fields": {
                    "epoch": unit.epoch,
                    "restored_version": unit.restored_version,
                    "inputs": len(positions),
                }
            },
        )

    def step(self) -> None:
        batch = self.consumer.poll_batch(self.settings.batch_size, self.settings.poll_timeout_s)
        self.publisher.latency.sample_batch(batch)
        buffer = self.intake.buffer
        for msg in batch:
            buffer(msg)
        self.release()
        # after release, so an input drained by it is resumed before the next poll
        self.intake.apply_backpressure()
        self.producer.poll()
        self.lag.update(self.consumer, self._handled)
        if self.checkpoints.due():
            self.lease.keep(force=True)  # a long checkpoint must not let it lapse
            try:
                self.checkpoint("cadence")
            except redis.RedisError as exc:
                self.checkpoints.retry_later(exc)
            self.lease.keep(force=True)
        self.lease.keep()
        if self.publisher.decisions:
            self._settle_decisions()
        if self._publish_status(force=False):
            self.controls.follow(self._worker())

    def _settle_decisions(self) -> None:
        """Rollout decisions published since the last call: kept in Redis for readers, and
        checkpointed at once, so the snapshot scorers route by carries them."""
        decisions = self.publisher.decisions
        events = [e.to_wire() for e in decisions]
        try:
            self.rollouts.add_events(events)
            self.checkpoint(f"rollout {','.join(e['kind'] for e in events)}")
        except redis.RedisError as exc:
            log.error(
                "rollout decision not yet kept in Redis or checkpointed; tried again next",
                extra={"fields": {"error": str(exc)}},
            )
            return
        del decisions[: len(events)]  # the checkpoint's drain may have added newer ones
        for e in events:
            self.metrics.rollout_decisions.labels(e["kind"], e["source"]).inc()

    def release(self) -> None:
        """Send what the intake releases to the model worker, in order; the results of
        earlier batches are published as they come back."""
        released = self.intake.release(self.state)
        if released.records:
            self._worker().submit(released.items, released.records, self.lease.keep)
        if released.duplicates:
            self.publisher.count("records", "duplicate", released.duplicates)
        if released.applied:
            assert self._unit is not None
            self._unit.unsaved += released.applied
        self.publish(block=False)

    def publish(self, block: bool) -> None:
        """Produce the outputs of the batches the worker has finished (all of them if
        `block`), in submission order."""
        self.publisher.publish(self._worker().results(block, self.lease.keep))

    def checkpoint(self, reason: str) -> int:
        """Every submitted record's outputs produced, then the worker's state persisted (the
        runtime's sequence, timed from here: the whole pause, with the wait for the batches
        in flight and the snapshot)."""
        started = time.perf_counter()
        self.publish(block=True)
        worker = self._worker()
        snapshot = worker.snapshot()
        snapshot.metrics = self.publisher.model_metrics
        snapshot.history = self.publisher.history
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

    def close(self, fenced: bool) -> None:
        try:
            if self.role == "active" and not fenced:
                self.role = "stopped"  # its last status says so: the API, the page
                try:
                    self._publish_status(force=True)
                except (WorkerError, DeliveryError, KafkaException) as exc:
                    # the failure that stops us says it; this one must not hide it
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
                self.lease.release()
            log.info(
                "learner stopped",
                extra={
                    "fields": {
                        "role": self.role,
                        "events": self.events_seen,
                        "dead_letters": self.publisher.dead_letters.sent,
                    }
                },
            )

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
        """`status`: the model side's counters (worker.core_status)."""
        rollout = status.pop("rollout", None)
        if rollout is not None:
            self.rollouts.write_state(rollout)
            routing = rollout["routing"]
            canary = routing["policy"] == "canary" and routing["challenger"] is not None
            self.metrics.rollout_share.set(routing["share"] if canary else 0.0)
            if rollout["agreement"] is not None:
                self.metrics.rollout_agreement.set(rollout["agreement"])
        record = LearnerStatus(
            role=self.role,
            label_lag_events=self._recent_label_lag(),
            dead_letters=self.publisher.dead_letters.sent,
            assigned_partitions=len(self.consumer.assignment),
            metrics=metric_values(self.publisher.model_metrics),
            **status,
        )
        self.metrics.pending.set(record.pending)
        for model, values in record.metrics.items():
            for name, value in values.items():
                self.metrics.model_metric.labels(model, name).set(value)
        self.status.write(record.fields())
        self._write_history()

    def _recent_label_lag(self) -> float:
        """Mean events between a prediction and its label, over the labels since the last
        status (the last known mean when none came)."""
        total, count = self.metrics.label_lag.totals()
        last_total, last_count, mean = self._label_lag
        if count > last_count:
            mean = (total - last_total) / (count - last_count)
        self._label_lag = (total, count, mean)
        return mean

    def _write_history(self) -> None:
        """The metrics' series, for the API, when it gained a point since the last write."""
        points = self.publisher.history.points
        mark = (len(points), points[-1].labels if points else 0)
        if mark == self._history_written:
            return
        try:
            self._redis.set(self._history_key, json.dumps(self.publisher.history.to_wire()))
        except redis.RedisError as exc:  # as the status: a blip must not stop the stream
            log.warning("metric history not written", extra={"fields": {"error": str(exc)}})
            return
        self._history_written = mark
