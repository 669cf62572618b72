"""Ingest's reconciliation after a restore: what a crashed owner wrote past its checkpoint.

Ingest's outputs are deterministic, and each carries its input record's lineage (a header,
or the dead-letter envelope). A checkpoint notes where the outputs ended (`ends`); the next
owner reads them from there (`written_since`) and does not write those records again.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition

from shared.codec import CodecError, decode
from shared.kafka.connection import KafkaConnection
from shared.kafka.consumer import CONSUMER_TUNING
from shared.settings import TopicNames

log = logging.getLogger(__name__)

LINEAGE_HEADER = "headwater-lineage"  # "topic:partition:offset" of the input record
Marks = dict[str, dict[int, int]]  # output topic -> partition -> end offset


class OutputRecovery:
    def __init__(self, kafka: KafkaConnection, group_prefix: str, topics: TopicNames) -> None:
        self.kafka = kafka
        self.group_prefix = group_prefix
        self.topics = topics
        self._watermarks: Consumer | None = None

    def ends(self, outputs: list[str], patience_s: float = 60.0) -> Marks:
        """Where each output partition ends. Asked on assignment too, which may come while
        the broker is still coming back from an outage: refused answers are asked again
        for up to `patience_s`."""
        if self._watermarks is None:  # one client for every checkpoint's query
            self._watermarks = self._reader()
        reader = self._watermarks
        deadline = time.monotonic() + patience_s
        while True:
            try:
                marks: Marks = {}
                for topic in outputs:
                    meta = reader.list_topics(topic, timeout=10).topics[topic]
                    marks[topic] = {
                        p: reader.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                        for p in meta.partitions
                    }
                return marks
            except KafkaException as exc:
                if time.monotonic() > deadline:
                    raise
                log.warning("output ends not known yet", extra={"fields": {"error": str(exc)}})
                time.sleep(0.5)

    def written_since(
        self, source: tuple[str, int], outputs: list[str], marks: Marks, next_offset: int
    ) -> set[int]:
        """Offsets of `source` from `next_offset` on whose output is in `outputs` past
        `marks`: a previous owner wrote them after its last checkpoint."""
        topic_in, partition_in = source
        ends = self.ends(outputs)
        found: set[int] = set()
        reader = self._reader()
        try:
            for topic, marked in marks.items():
                todo = {p: end for p, end in ends.get(topic, {}).items() if end > marked.get(p, 0)}
                if not todo:
                    continue
                reader.assign([TopicPartition(topic, p, marked.get(p, 0)) for p in todo])
                dead_letters = topic == self.topics.events_dlq
                for msg in _read_to_end(reader, todo):
                    lineage = _source_of(msg, dead_letters)
                    if (
                        lineage is not None
                        and lineage[0] == topic_in
                        and lineage[1] == partition_in
                        and lineage[2] >= max(next_offset, 0)
                    ):
                        found.add(lineage[2])
                reader.unassign()
        finally:
            reader.close()
        if found:
            log.info(
                "records written before the crash will not be written again",
                extra={"fields": {"topic": topic_in, "partition": partition_in, "n": len(found)}},
            )
        return found

    def _reader(self) -> Consumer:
        return Consumer(
            self.kafka.config(
                {
                    "group.id": f"{self.group_prefix}.recovery.{uuid.uuid4().hex}",
                    "enable.auto.commit": False,
                    **CONSUMER_TUNING,
                }
            )
        )

    def close(self) -> None:
        watermarks, self._watermarks = self._watermarks, None
        if watermarks is not None:
            watermarks.close()


def _read_to_end(reader: Consumer, ends: dict[int, int], cap_s: float = 30.0) -> Iterator[Message]:
    """Every record up to the end of the assigned partitions.

    A broker's high watermark can trail the log's true end (Tansu reports the last batch's
    first offset + 1), so reaching it is not enough: reading goes on until a fetch comes back
    empty. The writer being recovered is dead, so nothing of its own can follow.
    """
    remaining = dict(ends)
    deadline = time.monotonic() + cap_s
    quiet = 0
    while time.monotonic() < deadline and quiet < 10:
        batch = reader.consume(1000, 0.5)
        if not batch and not remaining:
            return
        quiet = 0 if batch else quiet + 1
        for msg in batch:
            if msg.error() is not None:
                continue
            yield msg
            p, at = msg.partition(), msg.offset() or 0
            if p in remaining and at + 1 >= remaining[p]:
                del remaining[p]
    log.warning("recovery read stopped before the outputs went quiet; duplicates are possible")


def _source_of(msg: Message, dead_letter: bool) -> tuple[str, int, int] | None:
    """The input record an output came from."""
    if dead_letter:
        try:
            envelope = decode(msg.value(), 2**31)
            return (
                str(envelope["source_topic"]),
                int(envelope["partition"]),
                int(envelope["offset"]),
            )
        except (CodecError, KeyError, TypeError, ValueError):
            return None
    for name, value in list(msg.headers() or []):
        if name == LINEAGE_HEADER and isinstance(value, bytes):
            parts = value.decode().rsplit(":", 2)
            return parts[0], int(parts[1]), int(parts[2])
    return None
