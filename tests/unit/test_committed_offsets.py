"""The group's committed offsets are asked again while the coordinator is not ready (a
broker just started), and any other error stands."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from shared.kafka import BatchConsumer


class Coordinator:
    """Stands in for the client: refuses `busy` times, then answers."""

    def __init__(self, busy: int, code: int = KafkaError.NOT_COORDINATOR) -> None:
        self.busy, self.code, self.asked = busy, code, 0

    def committed(self, partitions: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        self.asked += 1
        if self.asked <= self.busy:
            raise KafkaException(KafkaError(self.code))
        return [TopicPartition(p.topic, p.partition, 42) for p in partitions]


def consumer(stand_in: Coordinator) -> BatchConsumer:
    c = BatchConsumer("127.0.0.1:1", group_id="g", topics=None)
    c._consumer.close()
    c._consumer = stand_in  # type: ignore[assignment]
    return c


def test_a_coordinator_not_ready_is_asked_again():
    stand_in = Coordinator(busy=2)
    assert consumer(stand_in).committed([("t", 0)]) == {("t", 0): 42}
    assert stand_in.asked == 3


def test_other_errors_are_raised_at_once():
    stand_in = Coordinator(busy=1, code=KafkaError.GROUP_AUTHORIZATION_FAILED)
    with pytest.raises(KafkaException):
        consumer(stand_in).committed([("t", 0)])
    assert stand_in.asked == 1
