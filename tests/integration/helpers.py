"""Reading topics from the start, for assertions."""

from __future__ import annotations

import time
import uuid
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from shared.codec import decode


def read_topic(
    bootstrap: str, topic: str, expected: int, timeout: float = 60.0, partitions: int = 1
) -> list[Any]:
    """Decoded values until `expected` records arrived; fails loudly on a timeout."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"assert-{uuid.uuid4().hex[:6]}",
            "enable.auto.commit": False,
        }
    )
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    out: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while len(out) < expected:
            assert time.monotonic() < deadline, f"only {len(out)} of {expected} records on {topic}"
            for msg in consumer.consume(500, 0.2):
                assert msg.error() is None, msg.error()
                out.append(decode(msg.value()))
    finally:
        consumer.close()
    return out


def count_now(bootstrap: str, topic: str) -> int:
    """Records currently in a one-partition topic (high watermark)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "watermarks"})
    try:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        return int(high - low)
    finally:
        consumer.close()
