"""The scorer's Kafka loop: a stateless replica in a consumer group over the learner's input.

It holds no state of its own, so nothing is checkpointed: a partition's offsets are stored
(and auto-committed) only after the predictions of the records before them are delivered.
A replica that dies therefore leaves its partitions to the others at the last stored
offset, and what it had scored after that is scored again; downstream drops the repeats by
lineage, as it does for every Headwater output.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from confluent_kafka import TopicPartition
from prometheus_client import Counter, Gauge, Histogram

from services.scorer.follower import SnapshotFollower
from services.scorer.scoring import Input, Output, Scorer
from shared.kafka import BatchConsumer, SafeProducer
from shared.kafka.closing import close_all
from shared.kafka.lag import ConsumerLag
from shared.kafka.position import position
from shared.metrics import ServiceMetrics

log = logging.getLogger(__name__)

Partition = tuple[str, int]


@dataclass
class ScorerMetrics:
    records: Counter
    predictions: Counter
    batch_seconds: Histogram
    consumer_lag: Gauge
    served_version: Gauge
    snapshot_age: Gauge

    @classmethod
    def create(cls, m: ServiceMetrics) -> ScorerMetrics:
        return cls(
            records=m.counter(
                "records_total",
                "Input records by outcome: scored; duplicate (a features record re-emitted "
                "after a features restart); a reason the record was not scored (the "
                "learner dead-letters it).",
                ("outcome",),
            ),
            predictions=m.counter("predictions_total", "Predictions published.", ("model",)),
            batch_seconds=m.histogram("batch_processing_seconds", "Time to handle one batch."),
            consumer_lag=m.gauge(
                "consumer_lag",
                "Records behind the partition's high watermark, per assigned input partition.",
                ("topic", "partition"),
            ),
            served_version=m.gauge(
                "served_version",
                "Version of the model snapshot this replica serves (-1 before the first).",
            ),
            snapshot_age=m.gauge(
                "snapshot_age_seconds",
                "Seconds since the snapshot this replica serves was published.",
            ),
        )


class ScorerService:
    def __init__(
        self,
        consumer: BatchConsumer,
        producer: SafeProducer,
        follower: SnapshotFollower,
        scorer: Scorer,
        predictions_topic: str,
        shadow_topic: str,
        metrics: ScorerMetrics,
        batch_size: int,
        poll_timeout_s: float,
        commit_interval_s: float = 1.0,
    ) -> None:
        self.consumer = consumer
        self.producer = producer
        self.follower = follower
        self.scorer = scorer
        self.topic = predictions_topic
        self.shadow_topic = shadow_topic
        self.metrics = metrics
        self.batch_size = batch_size
        self.poll_timeout_s = poll_timeout_s
        self.commit_interval_s = commit_interval_s
        self.lag = ConsumerLag(metrics.consumer_lag)
        # Per partition: the next offset to score (for the lag), and the last offset scored
        # since offsets were last stored (its predictions may not be delivered yet).
        self._next: dict[Partition, int] = {}
        self._unstored: dict[Partition, int] = {}
        self._stored_at = time.monotonic()
        metrics.snapshot_age.set_function(self._age)
        metrics.served_version.set_function(self._version)
        consumer.listen(self._assigned, self._revoked, self._lost)

    def _version(self) -> float:
        current = self.follower.current
        return -1.0 if current is None else float(current.version)

    def _age(self) -> float:
        at = self.follower.published_at
        return 0.0 if at is None else max(0.0, time.time() - at)

    # -- the group's calls --------------------------------------------------------------

    def _assigned(self, partitions: list[TopicPartition]) -> None:
        log.info(
            "partitions assigned",
            extra={"fields": {"partitions": [f"{p.topic}[{p.partition}]" for p in partitions]}},
        )

    def _revoked(self, partitions: list[TopicPartition]) -> None:
        """Store what was delivered before the partitions go: the next owner starts there."""
        self._store_delivered()
        self._forget(partitions)

    def _lost(self, partitions: list[TopicPartition]) -> None:
        """Gone without a revocation (the group moved on): nothing of theirs is stored."""
        for p in partitions:
            self._unstored.pop((p.topic, p.partition), None)
        self._forget(partitions)

    def _forget(self, partitions: list[TopicPartition]) -> None:
        for p in partitions:
            self._next.pop((p.topic, p.partition), None)

    # -- the loop ------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        follower = self.follower
        if follower.wait_first(stop) is None:
            self.close()
            return
        follower.start()
        try:
            while not stop.is_set():
                if follower.error is not None:
                    raise follower.error
                self.step()
        finally:
            self.close()

    def step(self) -> None:
        batch = self.consumer.poll_batch(self.batch_size, self.poll_timeout_s)
        if batch:
            started = time.perf_counter()
            snapshot = self.follower.current  # one snapshot for the whole batch
            assert snapshot is not None
            records: list[Input] = [(*position(m), m.value()) for m in batch]
            out, shadow = self.scorer.score(snapshot, records)
            self.producer.produce_all(self.topic, out)
            self.producer.produce_all(self.shadow_topic, shadow)
            for topic, partition, offset, _ in records:
                self._unstored[(topic, partition)] = offset
                self._next[(topic, partition)] = offset + 1
            self._count(out)
            self.metrics.batch_seconds.observe(time.perf_counter() - started)
        else:
            self.producer.poll()
        if time.monotonic() - self._stored_at >= self.commit_interval_s:
            self._store_delivered()
        self.lag.update(self.consumer, lambda: self._next)

    def _count(self, out: list[Output]) -> None:
        tally = self.scorer.tally
        for outcome, n in tally.items():
            self.metrics.records.labels(outcome).inc(n)
        tally.clear()
        for model, n in self.scorer.served.items():
            self.metrics.predictions.labels(model).inc(n)
        self.scorer.served.clear()

    def _store_delivered(self) -> None:
        """Wait for every prediction produced, then store the offsets after them."""
        self._stored_at = time.monotonic()
        if not self._unstored:
            return
        self.producer.flush()
        self.consumer.store(self._unstored)
        self._unstored = {}

    def close(self) -> None:
        """Deliver, store, commit and leave the group; stop following snapshots."""

        close_all(
            self._store_delivered, self.consumer.close, self.producer.close, self.follower.close
        )
