"""Where a consumed record sits: (topic, partition, offset), never None for a data record."""

from __future__ import annotations

from confluent_kafka import Message


def position(msg: Message) -> tuple[str, int, int]:
    topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
    if topic is None or partition is None or offset is None:
        raise ValueError("record has no position (an error event, not a data record)")
    return topic, partition, offset
