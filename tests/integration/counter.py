"""A toy partitioned service on the stream runtime: how many records each key has had.

This file is the whole service: its state (a Counter per input partition), its record
handling and its status. Assignment, restore and seek, the checkpoint cadence, fenced
checkpoints, revocation and shutdown are the runtime's (shared/runtime/). After a crash
it resumes from its last checkpoint and emits again, identically, what followed it.
"""

from __future__ import annotations

from collections import Counter

import redis
from confluent_kafka import OFFSET_BEGINNING, Message

from shared.checkpoint.keys import CheckpointKeys
from shared.checkpoint.log import CheckpointLog
from shared.checkpoint.store import CheckpointStore
from shared.codec import encode
from shared.kafka import BatchConsumer, SafeProducer
from shared.kafka.position import position
from shared.keys import PipelineKeys
from shared.metrics import ServiceMetrics, StreamMetrics
from shared.runtime.ownership import StateKind
from shared.runtime.partitioned import Partition, PartitionedService, instance_name
from shared.runtime.status import Fields, StatusWriter
from shared.settings import Settings

Counts = Counter[str]


class CountsKind(StateKind[Partition, Counts]):
    """Checkpointed per partition as `(counts, next_offset)`, the runtime's default."""

    service = "counter"

    def __init__(
        self,
        client: redis.Redis,
        pipeline: str,
        keys: CheckpointKeys,
        copies: CheckpointLog | None = None,
    ) -> None:
        self.client, self.pipeline, self.keys, self.copies = client, pipeline, keys, copies

    def store(self, key: Partition) -> CheckpointStore:
        name = f"counter-p{key[1]}"
        return CheckpointStore(self.client, self.pipeline, name, self.keys, copies=self.copies)

    def fresh(self, key: Partition) -> tuple[Counts, int]:
        return Counter(), OFFSET_BEGINNING


class CounterService(PartitionedService[Counts]):
    name = "counter"

    def __init__(
        self,
        settings: Settings,
        pipeline: str,
        source: str,
        sink: str,
        client: redis.Redis,
        copies: CheckpointLog | None = None,
    ) -> None:
        metrics = StreamMetrics.create(ServiceMetrics("counter"), "counted")
        status_key = PipelineKeys(pipeline).instance_status("counter", instance_name())
        super().__init__(
            CountsKind(client, pipeline, settings.checkpoint_keys(), copies),
            BatchConsumer(
                settings.kafka_bootstrap, f"{settings.consumer_group_prefix}.counter", [source]
            ),
            SafeProducer(settings.kafka_bootstrap),
            settings,
            metrics,
            StatusWriter(client, status_key),
        )
        self.sink = sink

    def handle_batch(self, batch: list[Message]) -> None:
        for msg in batch:
            topic, partition, offset = position(msg)
            owned = self.ownership.get((topic, partition))
            if owned is None:  # revoked meanwhile
                continue
            key = (msg.key() or b"").decode()
            owned.state[key] += 1
            record = {"key": key, "count": owned.state[key], "lineage": [topic, partition, offset]}
            self.producer.produce(self.sink, encode(record), key.encode(), partition=partition)
            owned.next_offset = offset + 1
            owned.unsaved += 1

    def status_fields(self) -> Fields:
        return {
            "partitions": ",".join(str(p) for _, p in sorted(self.owned)),
            "keys": sum(len(owned.state) for owned in self.owned.values()),
        }
