"""`headwater record`: a topic's events back into a recorded stream."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from services.replay.recorded import write_events
from shared.codec import CodecError, decode
from shared.kafka import require_topics
from shared.kafka.connection import KafkaConnection
from shared.messages import Event, MessageError

log = logging.getLogger(__name__)


@dataclass
class RecordResult:
    written: int = 0
    skipped: int = 0


def topic_events(
    where: KafkaConnection | str,
    topic: str,
    *,
    limit: int | None,
    idle_timeout: float,
    result: RecordResult,
    on_record: Callable[[int], None] = lambda n: None,
) -> Iterator[Event]:
    """Events from the start of every partition until `limit` or `idle_timeout` s of silence."""
    partitions = require_topics(where, [topic])[topic]
    consumer = Consumer(
        KafkaConnection.of(where).config(
            {
                "group.id": f"headwater.record.{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "enable.partition.eof": False,
            }
        )
    )
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    try:
        last = time.monotonic()
        while limit is None or result.written < limit:
            msgs = consumer.consume(500, 0.2)
            if not msgs:
                if time.monotonic() - last >= idle_timeout:
                    break
                continue
            last = time.monotonic()
            for msg in msgs:
                if msg.error() is not None:
                    continue
                try:
                    event = Event.from_wire(decode(msg.value()))
                except (CodecError, MessageError) as exc:
                    result.skipped += 1
                    log.warning(
                        "record skipped: not an event",
                        extra={
                            "fields": {
                                "partition": msg.partition(),
                                "offset": msg.offset(),
                                "error": str(exc),
                            }
                        },
                    )
                    continue
                result.written += 1
                on_record(1)
                yield event
                if limit is not None and result.written >= limit:
                    break
    finally:
        consumer.close()


def record_topic(
    where: KafkaConnection | str,
    topic: str,
    path: str | Path,
    *,
    limit: int | None = None,
    idle_timeout: float = 5.0,
    on_record: Callable[[int], None] = lambda n: None,
) -> RecordResult:
    result = RecordResult()
    write_events(
        path,
        topic_events(
            where,
            topic,
            limit=limit,
            idle_timeout=idle_timeout,
            result=result,
            on_record=on_record,
        ),
    )
    return result
