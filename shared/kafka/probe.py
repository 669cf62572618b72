"""Asking the broker where a partition's log has records, with a consumer of its own that
joins no group: for rare questions off the hot path (the monitor, on a gap)."""

from __future__ import annotations

import threading
import time

from confluent_kafka import Consumer, KafkaError, TopicPartition

from shared.kafka.connection import KafkaConnection


class OffsetProbe:
    def __init__(self, where: KafkaConnection | str) -> None:
        self._connection = KafkaConnection.of(where)
        self._consumer: Consumer | None = None
        self._lock = threading.Lock()

    def first_offset(
        self, topic: str, partition: int, offset: int, timeout: float = 10.0
    ) -> int | None:
        """The first offset at or after `offset` that the log holds (the end offset when it
        holds none); None when the broker does not answer in time."""
        with self._lock:
            if self._consumer is None:
                self._consumer = Consumer(
                    self._connection.config(
                        {
                            "group.id": "headwater-offset-probe",  # never joins: assign only
                            "enable.auto.commit": False,
                            "enable.partition.eof": True,
                            "auto.offset.reset": "earliest",  # below the log's start: its first
                        }
                    )
                )
            consumer = self._consumer
            consumer.assign([TopicPartition(topic, partition, offset)])
            try:
                deadline = time.monotonic() + timeout
                while time.monotonic() < deadline:
                    msg = consumer.poll(0.5)
                    if msg is None:
                        continue
                    err = msg.error()
                    if err is None or err.code() == KafkaError._PARTITION_EOF:
                        found = msg.offset()
                        return None if found is None else int(found)
                return None
            finally:
                consumer.unassign()

    def close(self) -> None:
        with self._lock:
            if self._consumer is not None:
                self._consumer.close()
                self._consumer = None
