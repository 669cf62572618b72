import pytest

from shared.kafka import BatchConsumer, DeliveryError, SafeProducer
from shared.stack.processes import free_port


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
