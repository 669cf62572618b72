"""A group-managed Kafka service: one unit of state per input partition.

The consumer group hands partitions out; on assignment each is taken (new epoch, restore)
and the consumer seeks to its checkpointed offset; on revocation it is checkpointed first,
on loss (the group moved on) it is let go without one. The loop polls a batch, lets the
service handle it, checkpoints at the cadence and keeps the status current; on stopping it
writes a last checkpoint. A service subclasses `PartitionedService` with its record
handling (`handle_batch`) and its state (a `StateKind`); tests/integration/counter.py is a
complete one in under 100 lines.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Generic, TypeVar

from confluent_kafka import Message, TopicPartition

from shared.kafka import BatchConsumer, SafeProducer
from shared.kafka.closing import close_all
from shared.kafka.consumer import checkpoint_on_revoke
from shared.kafka.lag import ConsumerLag
from shared.metrics import StreamMetrics
from shared.runtime.checkpoints import Checkpoints
from shared.runtime.ownership import Offsets, Owned, Ownership, StateKind
from shared.runtime.status import Fields, StatusWriter
from shared.settings import Settings

log = logging.getLogger(__name__)

S = TypeVar("S")
Partition = tuple[str, int]  # (topic, partition): the key of a unit of state


def instance_name() -> str:
    """This process, as operators see it in status keys: host and pid."""
    return f"{socket.gethostname()}-{os.getpid()}"


class PartitionedService(ABC, Generic[S]):
    name: str  # the service, in logs

    def __init__(
        self,
        kind: StateKind[Partition, S],
        consumer: BatchConsumer,
        producer: SafeProducer,
        settings: Settings,
        metrics: StreamMetrics,
        status: StatusWriter | None,
    ) -> None:
        self.consumer = consumer
        self.producer = producer
        self.settings = settings
        self.metrics = metrics
        self.ownership = Ownership(kind, consumer.committed, settings.reset_state)
        self.owned = self.ownership.owned
        self.checkpoints = Checkpoints(
            self.ownership,
            metrics.checkpoint,
            settings.checkpoint_every_records,
            settings.checkpoint_interval_s,
            self.flush_outputs,
            consumer.store,
        )
        self.status = status
        self.lag = ConsumerLag(metrics.consumer_lag)
        self.closing = False
        consumer.listen(self.on_assign, self.on_revoke, self.on_lost)

    # -- what a service brings --------------------------------------------------------

    @abstractmethod
    def handle_batch(self, batch: list[Message]) -> None:
        """Apply each record of an owned partition, moving its unit's `next_offset` past it
        and counting it in `unsaved`; a record of a partition no longer owned is skipped."""

    @abstractmethod
    def status_fields(self) -> Fields:
        """This instance's status, written to Redis about once a second."""

    def flush_outputs(self) -> None:
        """Step 1 of a checkpoint: every output so far delivered."""
        self.producer.flush()

    def assigned(self, key: Partition, owned: Owned[S]) -> None:
        """A partition was taken and restored; the consumer seeks to `owned.next_offset`."""

    def released(self, keys: list[Partition]) -> None:
        """Partitions let go (after their checkpoint, or lost)."""

    def idle(self) -> None:
        """A poll brought no records."""

    def stopped(self) -> None:
        """After the last checkpoint, before the clients close."""

    def closers(self) -> list[Callable[[], None]]:
        """The service's own clients to close, besides the consumer and the producer."""
        return []

    # -- ownership ---------------------------------------------------------------------

    def on_assign(self, partitions: list[TopicPartition]) -> None:
        """New epoch, restore, seek: per partition (DESIGN §4)."""
        seeks = []
        for tp in partitions:
            key = (tp.topic, tp.partition)
            owned = self.ownership.take(key)
            self.assigned(key, owned)
            seeks.append(TopicPartition(tp.topic, tp.partition, owned.next_offset))
        self.consumer.assign_exact(seeks)

    def on_revoke(self, partitions: list[TopicPartition]) -> None:
        """Checkpoint (unless the broker cannot take it now), then let go."""
        if not self.closing:
            mine = [k for k in _keys(partitions) if k in self.ownership]
            checkpoint_on_revoke(lambda: self.checkpoint(mine, "revoke"))
        self.on_lost(partitions)

    def on_lost(self, partitions: list[TopicPartition]) -> None:
        """Let go without a checkpoint: the group gave the partitions to another already."""
        keys = _keys(partitions)
        self.ownership.let_go(keys)
        self.released(keys)

    def checkpoint(self, keys: list[Partition], reason: str = "checkpoint") -> None:
        self.checkpoints.checkpoint(keys, reason)

    # -- the loop ------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        log.info("service running", extra={"fields": {"service": self.name}})
        settings, consumer, metrics = self.settings, self.consumer, self.metrics
        try:
            while not stop.is_set():
                batch = consumer.poll_batch(settings.batch_size, settings.poll_timeout_s)
                if batch:
                    started = time.perf_counter()
                    self.handle_batch(batch)
                    metrics.batch_seconds.observe(time.perf_counter() - started)
                else:
                    self.idle()
                self.producer.poll()
                self.lag.update(consumer, self._handled)
                self.checkpoints.at_cadence()
                self.publish_status()
            self.checkpoint(self.ownership.keys(), "shutdown")
            self.stopped()
            self.publish_status(force=True)
        finally:
            self.close()

    def _handled(self) -> Offsets:
        return self.ownership.offsets(self.ownership.keys())

    def publish_status(self, force: bool = False) -> None:
        if self.status is not None and self.status.due(force):
            self.status.write(self.status_fields())

    def close(self) -> None:
        """Release the clients: `run` does on its way out; a caller that drives the service
        by hand (tests) calls it once instead."""
        self.closing = True  # leaving the group revokes partitions: already checkpointed
        close_all(self.consumer.close, *self.closers(), self.producer.close)


def _keys(partitions: list[TopicPartition]) -> list[Partition]:
    return [(tp.topic, tp.partition) for tp in partitions]
