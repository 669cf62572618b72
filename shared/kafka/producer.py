"""A producer whose delivery failures cannot pass silently.

The delivery callback remembers the first error; the next `produce` or `flush` raises it.
`flush` also raises when records are still undelivered at its deadline.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from shared.kafka.connection import KafkaConnection, explain

log = logging.getLogger(__name__)

Headers = list[tuple[str, str | bytes | None]]
POLL_EVERY = 256


class DeliveryError(RuntimeError):
    """A record was not written to Kafka."""


# Refusals a retry does not mend, with the permission to grant.
REFUSED: dict[int, str] = {
    KafkaError.TOPIC_AUTHORIZATION_FAILED: "not authorised to write to topic {topic!r}: grant "
    "this service's user Write on Topic:{topic} (see the README's ACL table)",
    KafkaError.CLUSTER_AUTHORIZATION_FAILED: "not authorised for idempotent writes: grant "
    "Write on the topic (Kafka 3.0+), or IdempotentWrite on the Cluster",
}


def undelivered(topic: str, err: KafkaError) -> DeliveryError:
    """The error a refused record raises, naming the permission to grant if it is one."""
    refused = REFUSED.get(err.code())
    reason = refused.format(topic=topic) if refused else f"{err.str()} (code {err.name()})"
    return DeliveryError(f"delivery to {topic} failed: {reason}")


class SafeProducer:
    def __init__(self, where: KafkaConnection | str, **config: Any) -> None:
        self._connection = KafkaConnection.of(where)
        conf: dict[str, Any] = {
            "linger.ms": 5,
            "enable.idempotence": True,  # no duplicates, no reordering on retries
            "acks": "all",
            "message.max.bytes": 2_000_000,
            "queue.buffering.max.messages": 200_000,
            # Success reports cost a Python call per record; only failures need one.
            "delivery.report.only.error": True,
            "on_delivery": self._on_delivery,
            # A refused login or certificate reaches only this callback; it fails the next call.
            "error_cb": self._on_error,
        }
        conf.update(config)
        self._producer = Producer(self._connection.config(conf))
        self._error: DeliveryError | None = None
        self._produced = 0
        self._failed = 0

    def _on_error(self, err: KafkaError) -> None:
        reason = explain(err)
        if reason is None and err.fatal():
            reason = f"the producer cannot go on: {err.str()}"
        if reason is None:
            log.warning("kafka producer error", extra={"fields": {"error": err.str()}})
        elif self._error is None:
            self._error = DeliveryError(f"cannot write to {self._connection}: {reason}")

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            if self._error is None:
                self._error = undelivered(str(msg.topic()), err)
            self._failed += 1
            log.error(
                "delivery failed", extra={"fields": {"topic": msg.topic(), "error": str(err)}}
            )

    @property
    def in_flight(self) -> int:
        """Records queued or awaiting the broker's acknowledgement."""
        return len(self._producer)

    @property
    def delivered(self) -> int:
        """Records the broker acknowledged (as of the last poll or flush)."""
        return self._produced - len(self._producer) - self._failed

    def _raise_pending(self) -> None:
        if self._error is not None:
            err, self._error = self._error, None
            raise err

    def produce(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        headers: Headers | None = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
    ) -> None:
        """Queue one record; raises a pending delivery error first. Waits when the queue is full."""
        if self._error is not None:
            self._raise_pending()
        # The hot paths pass what they can positionally: a keyword, even headers=None,
        # cost the client ~0.2 µs a record to parse.
        if timestamp_ms is None and headers is None:
            args = (topic, value, key) if partition is None else (topic, value, key, partition)
            try:
                self._producer.produce(*args)
            except BufferError:
                self._produce_when_room(*args)
            except KafkaException as exc:  # refused at once (a topic known unauthorised)
                raise undelivered(topic, exc.args[0]) from exc
        elif partition is None and timestamp_ms is None:  # ingest: the lineage header
            try:
                self._producer.produce(topic, value, key, headers=headers)
            except BufferError:
                self._produce_when_room(topic, value, key, headers=headers)
        else:
            kwargs: dict[str, Any] = {"headers": headers}
            if partition is not None:
                kwargs["partition"] = partition
            if timestamp_ms is not None:
                kwargs["timestamp"] = timestamp_ms
            self._produce_when_room(topic, value, key, **kwargs)
        self._produced += 1
        if not self._produced % POLL_EVERY:
            self._producer.poll(0)  # serve failure reports without a call per record

    def produce_all(self, topic: str, records: list[tuple[bytes, bytes | None]]) -> None:
        """Queue (value, key) records in order: `produce` for a batch, in one call."""
        if not records:
            return
        if self._error is not None:
            self._raise_pending()
        produce = self._producer.produce
        for value, key in records:
            try:
                produce(topic, value, key)
            except BufferError:
                self._produce_when_room(topic, value, key)
            except KafkaException as exc:  # refused at once (a topic known unauthorised)
                raise undelivered(topic, exc.args[0]) from exc
        self._produced += len(records)
        self._producer.poll(0)

    def _produce_when_room(self, *args: Any, **kwargs: Any) -> None:
        while True:
            try:
                self._producer.produce(*args, **kwargs)
                return
            except BufferError:
                self._producer.poll(0.05)  # queue full: serve callbacks, then retry

    def wait_for_topic(self, topic: str, timeout: float) -> None:
        """Fetch the topic's metadata (its leader) now rather than at the first record."""
        self._producer.list_topics(topic, timeout)

    def poll(self) -> None:
        """Serve delivery reports; services call it once per loop so counts stay current."""
        self._producer.poll(0)

    def flush(self, timeout: float = 30.0) -> None:
        """Wait for every queued record; raise if any failed or is still queued, or as soon
        as the broker refuses this client (rather than at the deadline)."""
        deadline = time.monotonic() + timeout
        remaining = self._producer.flush(min(timeout, 1.0))
        while remaining and self._error is None and time.monotonic() < deadline:
            remaining = self._producer.flush(min(1.0, max(0.0, deadline - time.monotonic())))
        self._raise_pending()
        if remaining:
            raise DeliveryError(f"{remaining} records still undelivered after {timeout:.0f}s")

    def close(self, timeout: float = 30.0) -> None:
        """Deliver what is queued (raising on failure), then release the client's threads."""
        try:
            self.flush(timeout)
        finally:
            close = getattr(self._producer, "close", None)  # confluent-kafka >= 2.11
            if close is not None:
                close()
