import time

import pytest

from shared.kafka import BatchConsumer, DeliveryError, SafeProducer
from shared.kafka.consumer import ConsumerConfigError
from shared.kafka.probe import OffsetProbe
from shared.stack.processes import free_port

from .conftest import BROKER


def test_producer_raises_delivery_errors_instead_of_dropping_records():
    producer = SafeProducer(f"127.0.0.1:{free_port()}", **{"message.timeout.ms": 500})
    producer.produce("events", b"x")
    with pytest.raises(DeliveryError, match="timed out"):
        producer.flush(10)
    del producer  # stop its reconnect attempts


def test_offsets_are_stored_only_for_batches_marked_done(stack, topics):
    producer = SafeProducer(stack.bootstrap)
    for i in range(10):
        producer.produce(topics.events, str(i).encode(), b"k")
    producer.flush()
    assert producer.delivered == 10

    first = BatchConsumer(stack.bootstrap, "adapter-test", [topics.events])
    got = []
    while len(got) < 10:
        got.extend(first.poll_batch(10, 1.0))
    first.done(got[:4])  # only the first four were handled
    first.close()

    second = BatchConsumer(stack.bootstrap, "adapter-test", [topics.events])
    again = []
    for _ in range(50):
        again.extend(second.poll_batch(10, 0.5))
        if len(again) >= 6:
            break
    second.close()
    assert [m.value() for m in again] == [str(i).encode() for i in range(4, 10)]


@pytest.mark.skipif(BROKER != "kafka", reason="Tansu takes any session timeout")
def test_a_session_timeout_the_broker_refuses_stops_the_consumer_with_its_name(stack, topics):
    """librdkafka would retry the join for ever, which looks like a hang (the local Kafka
    takes 1000 ms and more)."""
    consumer = BatchConsumer(
        stack.bootstrap,
        "refused",
        [topics.events],
        session_timeout_ms=500,
        **{"heartbeat.interval.ms": 100},
    )

    def poll_for(seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            consumer.poll_batch(10, 0.2)

    try:
        with pytest.raises(ConsumerConfigError, match="HEADWATER_SESSION_TIMEOUT_MS"):
            poll_for(20)
    finally:
        consumer.close()


def test_the_offset_probe_finds_the_first_record_at_or_after_an_offset(stack, topics):
    producer = SafeProducer(stack.bootstrap)
    for i in range(3):
        producer.produce(topics.events, str(i).encode(), b"k")
    producer.close()
    probe = OffsetProbe(stack.bootstrap)
    try:
        assert probe.first_offset(topics.events, 0, 1) == 1
        assert probe.first_offset(topics.events, 0, 3) == 3  # none there: the end offset
    finally:
        probe.close()
