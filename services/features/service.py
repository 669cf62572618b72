"""The features service's Kafka loop: per-partition window state, checkpointed per partition.

Partitions are group-managed (the service scales with them). On assignment each partition
takes a new epoch in its own checkpoint store, restores its window state and seeks to the
stored offset; on revocation it is checkpointed first. Outputs go to the same partition
number of the features topic, so an entity's features, events and labels stay co-partitioned.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import redis
from confluent_kafka import OFFSET_BEGINNING, Message, TopicPartition

from services.features.engine import FeatureEngine, PartitionState
from services.features.store import FeatureStore
from shared.checkpoint.store import CheckpointNotFoundError, CheckpointStore, StaleEpochError
from shared.codec import CodecError, decode, encode
from shared.kafka import BatchConsumer, SafeProducer
from shared.kafka.closing import close_all
from shared.kafka.consumer import checkpoint_on_revoke
from shared.kafka.lag import ConsumerLag
from shared.kafka.position import position
from shared.keys import PipelineKeys
from shared.messages import DeadLetter, Event, FeatureRecord, Lineage, MessageError
from shared.messages.fast_event import fast_valid_event
from shared.metrics import ServiceMetrics, StreamMetrics
from shared.settings import Settings

log = logging.getLogger(__name__)

SERVICE = "features"


def features_metrics(m: ServiceMetrics) -> StreamMetrics:
    return StreamMetrics.create(
        m, "applied (features emitted), dead_lettered, skipped_revoked (its partition was gone)"
    )


class FeaturesFencedError(RuntimeError):
    pass


@dataclass
class Owned:
    """A partition this instance owns: its checkpoint store, epoch and next offset."""

    store: CheckpointStore
    epoch: int
    next_offset: int
    since_checkpoint: int = 0


@dataclass
class FeaturesService:
    pipeline: str
    engine: FeatureEngine
    consumer: BatchConsumer
    producer: SafeProducer
    feature_store: FeatureStore
    checkpoint_store: Callable[[int], CheckpointStore]  # one store per partition
    settings: Settings
    owned: dict[int, Owned] = field(default_factory=dict)
    last_checkpoint: float = field(default_factory=time.monotonic)
    emitted: int = 0
    dead_lettered: int = 0
    closing: bool = False
    status_at: float = 0.0
    instance: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    metrics: StreamMetrics = field(
        default_factory=lambda: features_metrics(ServiceMetrics(SERVICE)), repr=False
    )

    def __post_init__(self) -> None:
        self.lag = ConsumerLag(self.metrics.consumer_lag)
        self.metrics.checkpoint.unsaved = self._unsaved
        # bound once: the counters move once per batch
        self._applied = self.metrics.records.labels("applied")
        self._emitted_out = self.metrics.records_out.labels(self.settings.topics.features)

    def on_assign(self, partitions: list[TopicPartition]) -> None:
        """New epoch, restore, seek: per partition (DESIGN §4)."""
        seeks = []
        for tp in partitions:
            store = self.checkpoint_store(tp.partition)
            epoch = store.new_epoch()
            try:
                info, (state, next_offset) = store.load()
                log.info(
                    "partition restored",
                    extra={"fields": {"partition": tp.partition, "version": info.version}},
                )
            except CheckpointNotFoundError:
                state, next_offset = PartitionState(), OFFSET_BEGINNING
            self.engine.partitions[tp.partition] = state
            self.owned[tp.partition] = Owned(store, epoch, next_offset)
            seeks.append(TopicPartition(tp.topic, tp.partition, next_offset))
        self.consumer.assign_exact(seeks)

    def on_revoke(self, partitions: list[TopicPartition]) -> None:
        """Checkpoint (unless the broker cannot take it now), then let go."""
        if not self.closing:
            mine = [tp.partition for tp in partitions if tp.partition in self.owned]
            checkpoint_on_revoke(lambda: self.checkpoint(mine, "revoke"))
        self.on_lost(partitions)

    def on_lost(self, partitions: list[TopicPartition]) -> None:
        """Let go without a checkpoint: the group gave the partitions to another already."""
        for tp in partitions:
            self.owned.pop(tp.partition, None)
            self.engine.partitions.pop(tp.partition, None)

    def run(self, stop: threading.Event) -> None:
        log.info("features service running", extra={"fields": {"pipeline": self.pipeline}})
        try:
            while not stop.is_set():
                batch = self.consumer.poll_batch(
                    self.settings.batch_size, self.settings.poll_timeout_s
                )
                if batch:
                    self.handle_batch(batch)
                else:
                    self._update_feature_store()  # idle: the store catches up now
                self.producer.poll()
                self.lag.update(self.consumer, self._handled)
                if self._due():
                    try:
                        self.checkpoint(list(self.owned), "cadence")
                    except redis.RedisError as exc:  # retried at the next cadence
                        log.error(
                            "checkpoint failed; will retry", extra={"fields": {"error": str(exc)}}
                        )
                        self.last_checkpoint = time.monotonic()
                self.publish_status(force=False)
            self.checkpoint(list(self.owned), "shutdown")
            self._update_feature_store()
            self.publish_status(force=True)
        finally:
            self.close()

    def close(self) -> None:
        """Release the clients: `run` does on its way out; a caller that drives the service
        by hand (tests) calls it once instead."""
        self.closing = True  # leaving the group revokes partitions: already checkpointed
        close_all(self.consumer.close, self.producer.close)

    def _handled(self) -> dict[tuple[str, int], int]:
        topic = self.settings.topics.events_valid
        return {(topic, p): owned.next_offset for p, owned in self.owned.items()}

    def handle_batch(self, batch: list[Message]) -> None:
        started = time.perf_counter()
        latest: dict[str, bytes] = {}  # per entity, its last record: the store's value
        # names bound once per batch: this loop runs per record
        owned_get, process, produce = self.owned.get, self.engine.process, self.producer.produce
        out_topic, max_bytes = self.settings.topics.features, self.settings.max_message_bytes
        emitted = 0
        for msg in batch:
            topic, partition, offset = position(msg)
            owned = owned_get(partition)
            if owned is None:  # revoked meanwhile
                self.metrics.records.labels("skipped_revoked").inc()
                continue
            lineage = Lineage(topic, partition, offset)
            try:
                raw = msg.value()
                event = fast_valid_event(raw, max_bytes) or self._event(raw)
                computed = process(partition, event)
            except (CodecError, MessageError) as exc:
                self.dead_letter(lineage, msg, exc.reason, str(exc))
            except Exception as exc:  # never a crash loop on one record
                log.exception("features failed on a record", extra={"fields": {"offset": offset}})
                self.dead_letter(lineage, msg, "feature_error", f"{type(exc).__name__}: {exc}")
            else:
                value = encode(FeatureRecord(event, computed[0], computed[1], lineage))
                if len(value) > max_bytes:  # the event and its features: more than the event
                    self.dead_letter(
                        lineage,
                        msg,
                        "too_large",
                        f"features record of {len(value)} bytes exceeds the {max_bytes}-byte "
                        "limit (HEADWATER_MAX_MESSAGE_BYTES)",
                    )
                else:
                    entity = event.entity
                    produce(out_topic, value, entity.encode(), partition=partition)
                    latest[entity] = value
                    emitted += 1
            owned.next_offset = offset + 1
            owned.since_checkpoint += 1
        self.emitted += emitted
        self._update_feature_store(latest)
        if emitted:
            self._applied.inc(emitted)
            self._emitted_out.inc(emitted)
        self.metrics.batch_seconds.observe(time.perf_counter() - started)

    def _update_feature_store(self, latest: dict[str, bytes] | None = None) -> None:
        """Send a batch's latest records (settling the previous write), or, with none, wait
        for the write in flight. A Redis error is logged: the topic has the records, and an
        entity's key is written again with its next event."""
        try:
            if latest is None:
                self.feature_store.flush()
            else:
                self.feature_store.write_latest(latest)
        except redis.RedisError as exc:
            log.warning("feature store not updated", extra={"fields": {"error": str(exc)}})

    def _event(self, raw: bytes | None) -> Event:
        """The full route, for what the msgspec fast path declined: it names the defect."""
        return Event.from_wire(decode(raw, self.settings.max_message_bytes))

    def publish_status(self, force: bool) -> None:
        """Progress for operators: per instance, what it owns and how its windows fare."""
        now = time.monotonic()
        if not force and now - self.status_at < 1.0:
            return
        self.status_at = now
        states = [self.engine.partitions[p] for p in self.owned if p in self.engine.partitions]
        fields: dict[str, str | int | float] = {
            "partitions": ",".join(str(p) for p in sorted(self.owned)),
            "emitted": self.emitted,
            "dead_letters": self.dead_lettered,
            "entities": sum(len(s.entities) for s in states),
            "late": sum(s.late for s in states),
            "expired": sum(s.expired for s in states),
            "updated_at": time.time(),
        }
        key = PipelineKeys(self.pipeline).instance_status("features", self.instance)
        try:
            self.feature_store.client.hset(key, mapping=fields)  # type: ignore[arg-type]
            self.feature_store.client.expire(key, 300)
        except Exception as exc:  # a Redis blip must not stop the stream; retried next second
            log.warning("status not written to Redis", extra={"fields": {"error": str(exc)}})

    def dead_letter(self, lineage: Lineage, msg: Message, reason: str, message: str) -> None:
        envelope = DeadLetter.of(
            lineage.topic, lineage.partition, lineage.offset, reason, message, SERVICE, msg.value()
        )
        key = msg.key()
        self.producer.produce(
            self.settings.topics.events_dlq,
            encode(envelope.to_wire()),
            key if isinstance(key, bytes) else None,
        )
        self.dead_lettered += 1
        self.metrics.records.labels("dead_lettered").inc()
        self.metrics.records_out.labels(self.settings.topics.events_dlq).inc()
        self.metrics.dead_letters.labels(reason).inc()

    def _unsaved(self) -> int:
        return sum(o.since_checkpoint for o in list(self.owned.values()))

    def _due(self) -> bool:
        records = sum(o.since_checkpoint for o in self.owned.values())
        elapsed = time.monotonic() - self.last_checkpoint
        return records > 0 and (
            records >= self.settings.checkpoint_every_records
            or elapsed >= self.settings.checkpoint_interval_s
        )

    def checkpoint(self, partitions: list[int], reason: str) -> None:
        """Flush outputs, then each partition's state with its next offset (fenced)."""
        started = time.perf_counter()
        self.producer.flush()
        for p in partitions:
            owned = self.owned[p]
            state = self.engine.partitions.get(p, PartitionState())
            meta = {
                "reason": reason,
                "next_offset": owned.next_offset,
                "entities": len(state.entities),
                "late": state.late,
                "expired": state.expired,
            }
            try:
                owned.store.write(owned.epoch, (state, owned.next_offset), meta)
            except StaleEpochError as exc:
                raise FeaturesFencedError(
                    f"partition {p} is owned by another instance: {exc}"
                ) from exc
            owned.since_checkpoint = 0
        topic = self.settings.topics.events_valid
        self.consumer.store(
            {
                (topic, p): self.owned[p].next_offset - 1
                for p in partitions
                if self.owned[p].next_offset > 0
            }
        )
        self.last_checkpoint = time.monotonic()
        if partitions:
            self.metrics.checkpoint.written(
                time.perf_counter() - started,
                sum(owned.store.last_bytes for owned in self.owned.values()),
            )
