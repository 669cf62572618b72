"""Batched consumer that stores offsets only after a batch's output is handled.

Auto-commit commits stored offsets in the background; offsets are stored explicitly
after the caller says the batch is done (`done(batch)`), so a crash replays the batch
instead of losing it (at-least-once; exact effect comes from checkpoints, DESIGN §4).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from shared.kafka.connection import KafkaConnection, explain
from shared.kafka.position import position
from shared.kafka.producer import DeliveryError

log = logging.getLogger(__name__)

# Shared with the benchmarks' baseline consumers, so a baseline is never slowed by a default
# that Headwater's own consumers do not suffer from.
CONSUMER_TUNING: dict[str, int] = {"fetch.wait.max.ms": 10, "fetch.queue.backoff.ms": 10}


GROUP_PROTOCOLS = ("classic", "consumer")

# Group errors that no retry mends: a setting or a permission to change. librdkafka reports
# them as plain errors and retries for ever, which looks like a hang; the service stops.
CONFIG_ERRORS: dict[int, str] = {
    KafkaError.INVALID_SESSION_TIMEOUT: "the broker refuses HEADWATER_SESSION_TIMEOUT_MS "
    "(outside its group.min/max.session.timeout.ms)",
    KafkaError.GROUP_AUTHORIZATION_FAILED: "not authorised to use consumer group {group!r}: "
    "grant this service's user Read on Group:{group} (see the README's ACL table)",
    KafkaError.TOPIC_AUTHORIZATION_FAILED: "not authorised to read topic {topic!r}: grant this "
    "service's user Read on Topic:{topic} (see the README's ACL table)",
    KafkaError.UNSUPPORTED_VERSION: "the broker does not support a request this consumer "
    "needs (with HEADWATER_GROUP_PROTOCOL=consumer: a broker without KIP-848; use classic)",
}


# The group coordinator cannot answer yet (loading, moving, not elected): asked again for
# this long before the error stands.
COORDINATOR_BUSY = frozenset(
    {
        KafkaError.NOT_COORDINATOR,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
    }
)
RETRY_COORDINATOR_S = 30.0


class ConsumerConfigError(RuntimeError):
    """The broker refused this consumer's group settings or permissions."""


def group_settings(protocol: str, session_timeout_ms: int) -> dict[str, Any]:
    """librdkafka's group settings for `classic` or `consumer` (KIP-848). The consumer
    protocol's session and heartbeat are the broker's (group.consumer.*): librdkafka refuses
    session.timeout.ms and heartbeat.interval.ms with it."""
    if protocol == "consumer":
        return {"group.protocol": "consumer"}
    if protocol != "classic":
        raise ValueError(f"group protocol {protocol!r}: choose one of {GROUP_PROTOCOLS}")
    return {
        "group.protocol": "classic",
        "session.timeout.ms": session_timeout_ms,
        "heartbeat.interval.ms": max(500, session_timeout_ms // 3),
    }


def checkpoint_on_revoke(checkpoint: Callable[[], None]) -> None:
    """A revocation's checkpoint, skipped when the broker cannot take it now (it is coming
    back from an outage): the next owner restores the last one, and what followed it is
    emitted again and dropped downstream by lineage."""
    try:
        checkpoint()
    except (KafkaException, DeliveryError) as exc:
        log.warning(
            "no checkpoint on revocation; the next owner resumes from the last one",
            extra={"fields": {"error": str(exc)}},
        )


class BatchConsumer:
    def __init__(
        self,
        where: KafkaConnection | str,
        group_id: str,
        topics: Iterable[str] | None,
        *,
        session_timeout_ms: int = 6000,
        group_protocol: str = "classic",
        auto_offset_reset: str = "earliest",
        on_assign: Callable[[list[TopicPartition]], None] | None = None,
        on_revoke: Callable[[list[TopicPartition]], None] | None = None,
        on_lost: Callable[[list[TopicPartition]], None] | None = None,
        **config: Any,
    ) -> None:
        conf: dict[str, Any] = {
            "group.id": group_id,
            **group_settings(group_protocol, session_timeout_ms),
            "auto.offset.reset": auto_offset_reset,
            "enable.auto.offset.store": False,
            "enable.auto.commit": True,
            "auto.commit.interval.ms": 1000,
            "enable.partition.eof": False,
            # A fetch that includes a quiet partition (labels, often) must not wait the
            # default 500 ms for it: that halves throughput on Tansu.
            "fetch.wait.max.ms": CONSUMER_TUNING["fetch.wait.max.ms"],
            # When the local queue is full (the fetcher outruns the service, the usual case
            # for a backlog), librdkafka waits this long before fetching again: at its 1 s
            # default, a service doing a few µs of work per record spent 80% of its time
            # waiting in consume() (measured on Tansu: consume + decode 166k -> 570k/s).
            "fetch.queue.backoff.ms": CONSUMER_TUNING["fetch.queue.backoff.ms"],
        }
        conf.update(config)
        self._group = group_id
        self._consumer = Consumer(KafkaConnection.of(where).config(conf))
        # The consumer protocol (or a cooperative assignor) hands partitions out a few at a
        # time: an assignment adds to the one before, through incremental_assign.
        self._incremental = (
            conf.get("group.protocol") == "consumer"
            or conf.get("partition.assignment.strategy") == "cooperative-sticky"
        )
        self._on_assign = on_assign
        self._on_revoke = on_revoke
        self._on_lost = on_lost
        self.assignment: list[TopicPartition] = []
        # A broker without KIP-848 (Kafka < 4, Tansu) never assigns anything to a consumer-
        # protocol member, and librdkafka says so only in its debug log: a warning instead.
        self._unassigned_since: float | None = (
            time.monotonic()
            if topics is not None and conf["group.protocol"] == "consumer"
            else None
        )
        if topics is not None:  # group-managed; otherwise the owner calls assign()
            self._consumer.subscribe(
                list(topics),
                on_assign=self._assigned,
                on_revoke=self._revoked,
                on_lost=self._lost,
            )

    def listen(
        self,
        on_assign: Callable[[list[TopicPartition]], None],
        on_revoke: Callable[[list[TopicPartition]], None],
        on_lost: Callable[[list[TopicPartition]], None],
    ) -> None:
        """Who hears of rebalances, when it exists only after the consumer (they come from
        `poll_batch`, so none is missed)."""
        self._on_assign, self._on_revoke, self._on_lost = on_assign, on_revoke, on_lost

    def assign_exact(self, partitions: list[TopicPartition]) -> None:
        """From an on_assign callback: take the group's partitions at chosen offsets."""
        if self._incremental:
            added = {(p.topic, p.partition) for p in partitions}
            kept = [p for p in self.assignment if (p.topic, p.partition) not in added]
            self.assignment = kept + list(partitions)
            self._consumer.incremental_assign(list(partitions))
        else:
            self.assignment = list(partitions)
            self._consumer.assign(self.assignment)

    def assign(self, positions: dict[tuple[str, int], int]) -> None:
        """Own these partitions outright, reading each from the given offset."""
        self.assignment = [TopicPartition(t, p, o) for (t, p), o in positions.items()]
        self._consumer.assign(self.assignment)

    def _assigned(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._unassigned_since = None
        if self._incremental:
            self.assignment = [*self.assignment, *partitions]
        else:
            self.assignment = list(partitions)
        log.info(
            "partitions assigned",
            extra={"fields": {"partitions": [f"{p.topic}[{p.partition}]" for p in partitions]}},
        )
        if self._on_assign is not None:
            self._on_assign(partitions)

    def _forget(self, partitions: list[TopicPartition]) -> None:
        gone = {(p.topic, p.partition) for p in partitions}
        self.assignment = [p for p in self.assignment if (p.topic, p.partition) not in gone]

    def _revoked(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._forget(partitions)
        if self._on_revoke is not None:
            self._on_revoke(partitions)

    def _lost(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """The group moved on without this member (its session expired, e.g. while the
        broker was down): the partitions may be another's already, so the owner must not
        checkpoint them (`on_lost`); without an `on_lost`, `on_revoke` is told."""
        log.warning(
            "partitions lost",
            extra={"fields": {"partitions": [f"{p.topic}[{p.partition}]" for p in partitions]}},
        )
        if self._on_lost is None:
            self._revoked(_consumer, partitions)
            return
        self._forget(partitions)
        self._on_lost(partitions)

    def pause(self, partitions: list[tuple[str, int]]) -> None:
        self._consumer.pause([TopicPartition(t, p) for t, p in partitions])

    def resume(self, partitions: list[tuple[str, int]]) -> None:
        self._consumer.resume([TopicPartition(t, p) for t, p in partitions])

    def poll_batch(self, max_records: int, timeout: float) -> list[Message]:
        """Up to `max_records` data records; transient errors are logged, fatal ones raised.

        Waits (up to `timeout`) only for the first record: consume() with a timeout waits
        for a full batch, so the last records of a burst sat there for the whole timeout
        (200 ms by default) although they had arrived."""
        consume = self._consumer.consume
        batch = consume(max_records, 0)
        if not batch:
            batch = consume(1, timeout)
            if batch and max_records > 1:
                batch += consume(max_records - 1, 0)
        if self._unassigned_since is not None:
            self._warn_if_never_assigned()
        records = []
        for msg in batch:
            err = msg.error()
            if err is None:
                records.append(msg)
            elif err.fatal():
                raise KafkaException(err)
            elif err.code() in CONFIG_ERRORS:
                refused = CONFIG_ERRORS[err.code()].format(group=self._group, topic=msg.topic())
                raise ConsumerConfigError(f"{refused} ({err.str()})")
            elif (reason := explain(err)) is not None:
                raise ConsumerConfigError(f"cannot read from the Kafka cluster: {reason}")
            elif err.code() != KafkaError._PARTITION_EOF:
                log.warning("consumer error", extra={"fields": {"error": err.str()}})
        return records

    def _warn_if_never_assigned(self, after_s: float = 30.0) -> None:
        assert self._unassigned_since is not None
        if time.monotonic() - self._unassigned_since > after_s:
            self._unassigned_since = None
            log.warning(
                "no partition assigned after %.0f s with HEADWATER_GROUP_PROTOCOL=consumer: "
                "a broker without the KIP-848 protocol (Apache Kafka before 4.0, Tansu) never "
                "assigns any; set HEADWATER_GROUP_PROTOCOL=classic there",
                after_s,
            )

    def cached_watermarks(self, topic: str, partition: int) -> tuple[int, int] | None:
        """(low, high) watermarks of an assigned partition as the client last saw them, with
        no broker round trip (~3 µs): the high one comes with every fetch response, so it is
        current while the partition is fetched. None until the client has seen them."""
        try:
            low, high = self._consumer.get_watermark_offsets(
                TopicPartition(topic, partition), cached=True
            )
        except KafkaException:
            return None
        return None if high < 0 else (low, high)

    def done(self, batch: list[Message]) -> None:
        """Mark a batch handled: store the next offset of each partition it touched."""
        last: dict[tuple[str, int], int] = {}
        for msg in batch:
            topic, partition, offset = position(msg)
            last[(topic, partition)] = offset
        self.store(last)

    def committed(
        self, partitions: list[tuple[str, int]], timeout: float = 10.0
    ) -> dict[tuple[str, int], int]:
        """The group's committed offset of each partition that has one: evidence that the
        group processed records there before."""
        if not partitions:
            return {}
        wanted = [TopicPartition(t, p) for t, p in partitions]
        deadline = time.monotonic() + RETRY_COORDINATOR_S
        while True:
            try:
                found = self._consumer.committed(wanted, timeout=timeout)
                break
            except KafkaException as exc:
                # A broker just started, or the group's coordinator moving: it answers soon.
                if exc.args[0].code() not in COORDINATOR_BUSY or time.monotonic() > deadline:
                    raise
                log.info(
                    "group coordinator not ready; asking again",
                    extra={"fields": {"error": str(exc)}},
                )
                time.sleep(0.5)
        return {(tp.topic, tp.partition): tp.offset for tp in found if tp.offset >= 0}

    def store(self, handled: dict[tuple[str, int], int]) -> None:
        """Store, per (topic, partition), the offset after the last handled record."""
        if handled:
            self._consumer.store_offsets(
                offsets=[TopicPartition(t, p, o + 1) for (t, p), o in handled.items()]
            )

    def close(self) -> None:
        """Commit what was stored, leave the group."""
        try:
            self._consumer.commit(asynchronous=False)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError._NO_OFFSET:
                log.warning("final commit failed", extra={"fields": {"error": str(exc)}})
        finally:
            self._consumer.close()
