"""The features service: per-partition window state on the stream runtime (shared/runtime/).

Partitions are group-managed (the service scales with them); each has its own checkpoint of
its window state. Outputs go to the same partition number of the features topic, so an
entity's features, events and labels stay co-partitioned.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import redis
from confluent_kafka import OFFSET_BEGINNING, Message

from services.features.engine import FeatureEngine, PartitionState
from shared.checkpoint.store import CheckpointStore
from shared.codec import CodecError, decode, encode
from shared.feature_store import FeatureStore
from shared.kafka import BatchConsumer, SafeProducer
from shared.kafka.position import position
from shared.messages import Event, FeatureRecord, Lineage, MessageError
from shared.messages.fast_event import fast_valid_event
from shared.metrics import ServiceMetrics, StreamMetrics
from shared.runtime.dead_letters import DeadLetters
from shared.runtime.ownership import Owned, StateKind
from shared.runtime.partitioned import Partition, PartitionedService
from shared.runtime.status import Fields, StatusWriter
from shared.settings import Settings
from shared.status import FeaturesStatus

log = logging.getLogger(__name__)

SERVICE = "features"


def features_metrics(m: ServiceMetrics) -> StreamMetrics:
    return StreamMetrics.create(
        m, "applied (features emitted), dead_lettered, skipped_revoked (its partition was gone)"
    )


class WindowState(StateKind[Partition, PartitionState]):
    """A partition's windows, checkpointed with its next offset as `(state, next_offset)`."""

    service = SERVICE

    def __init__(self, stores: Callable[[int], CheckpointStore]) -> None:
        self._stores = stores

    def store(self, key: Partition) -> CheckpointStore:
        return self._stores(key[1])

    def fresh(self, key: Partition) -> tuple[PartitionState, int]:
        return PartitionState(), OFFSET_BEGINNING

    def meta(self, key: Partition, owned: Owned[PartitionState]) -> dict[str, int]:
        state = owned.state
        return {
            "next_offset": owned.next_offset,
            "entities": len(state.entities),
            "late": state.late,
            "expired": state.expired,
        }


class FeaturesService(PartitionedService[PartitionState]):
    name = SERVICE

    def __init__(
        self,
        engine: FeatureEngine,
        consumer: BatchConsumer,
        producer: SafeProducer,
        feature_store: FeatureStore,
        stores: Callable[[int], CheckpointStore],  # one per partition
        settings: Settings,
        metrics: StreamMetrics,
        status: StatusWriter | None = None,
    ) -> None:
        super().__init__(WindowState(stores), consumer, producer, settings, metrics, status)
        self.engine = engine
        self.feature_store = feature_store
        self.dead_letters = DeadLetters(
            SERVICE, settings.topics.events_dlq, metrics, producer.produce
        )
        self.emitted = 0
        # bound once: the counters move once per batch
        self._applied = metrics.records.labels("applied")
        self._emitted_out = metrics.records_out.labels(settings.topics.features)

    def assigned(self, key: Partition, owned: Owned[PartitionState]) -> None:
        self.engine.partitions[key[1]] = owned.state

    def released(self, keys: list[Partition]) -> None:
        for _, partition in keys:
            self.engine.partitions.pop(partition, None)

    def idle(self) -> None:
        self._update_feature_store()  # the store catches up now

    def stopped(self) -> None:
        self._update_feature_store()

    def handle_batch(self, batch: list[Message]) -> None:
        latest: dict[str, bytes] = {}  # per entity, its last record: the store's value
        # names bound once per batch: this loop runs per record
        owned_get, process, produce = self.ownership.get, self.engine.process, self.producer.produce
        out_topic, max_bytes = self.settings.topics.features, self.settings.max_message_bytes
        emitted = 0
        for msg in batch:
            topic, partition, offset = position(msg)
            owned = owned_get((topic, partition))
            if owned is None:  # revoked meanwhile
                self.metrics.records.labels("skipped_revoked").inc()
                continue
            lineage = Lineage(topic, partition, offset)
            try:
                raw = msg.value()
                event = fast_valid_event(raw, max_bytes) or self._event(raw)
                computed = process(partition, event)
            except (CodecError, MessageError) as exc:
                self._dead_letter(lineage, msg, exc.reason, str(exc))
            except Exception as exc:  # never a crash loop on one record
                log.exception("features failed on a record", extra={"fields": {"offset": offset}})
                self._dead_letter(lineage, msg, "feature_error", f"{type(exc).__name__}: {exc}")
            else:
                value = encode(FeatureRecord(event, computed[0], computed[1], lineage))
                if len(value) > max_bytes:  # the event and its features: more than the event
                    self._dead_letter(
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
            owned.unsaved += 1
        self.emitted += emitted
        self._update_feature_store(latest)
        if emitted:
            self._applied.inc(emitted)
            self._emitted_out.inc(emitted)

    def _dead_letter(self, lineage: Lineage, msg: Message, reason: str, message: str) -> None:
        key = msg.key()
        self.dead_letters.send(
            lineage, msg.value(), key if isinstance(key, bytes) else None, reason, message
        )

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

    def status_fields(self) -> Fields:
        """What this instance owns and how its windows fare."""
        states = [owned.state for owned in self.owned.values()]
        return FeaturesStatus(
            partitions=tuple(p for _, p in sorted(self.owned)),
            emitted=self.emitted,
            dead_letters=self.dead_letters.sent,
            entities=sum(len(s.entities) for s in states),
            late=sum(s.late for s in states),
            expired=sum(s.expired for s in states),
        ).fields()
