"""event_to_prediction_seconds: from an input record's Kafka timestamp to its prediction.

Sampled: the first and last record of each consumed batch. Per input partition of events,
(offset, Kafka timestamp in s) of sampled records wait until a published batch has passed
their offset, and are observed then.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Sequence
from typing import Protocol

from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, Message
from prometheus_client import Histogram

from shared.messages import Lineage


class HasLineage(Protocol):
    @property
    def lineage(self) -> Lineage: ...


SAMPLES_KEPT = 64  # per input partition, sampled records waiting for their prediction
SCAN = 256  # how far back a published batch is searched for sampled partitions


class LatencySamples:
    def __init__(self, source_topic: str | None, histogram: Histogram) -> None:
        self.source_topic = source_topic  # the events (or features) topic
        self.histogram = histogram
        self._samples: dict[tuple[str, int], collections.deque[tuple[int, float]]] = {}

    def sample_batch(self, batch: list[Message]) -> None:
        if batch:
            self.sample(batch[0])
            if len(batch) > 1:
                self.sample(batch[-1])

    def sample(self, msg: Message) -> None:
        """Keep an events record's Kafka timestamp."""
        topic = msg.topic()
        if topic != self.source_topic or topic is None:
            return
        kind, ts_ms = msg.timestamp()
        partition, offset = msg.partition(), msg.offset()
        if kind == TIMESTAMP_NOT_AVAILABLE or partition is None or offset is None:
            return
        samples = self._samples.get((topic, partition))
        if samples is None:
            samples = self._samples[(topic, partition)] = collections.deque(maxlen=SAMPLES_KEPT)
        samples.append((offset, ts_ms / 1000))

    def observe(self, records: Sequence[HasLineage]) -> None:
        """The outputs of `records` were just handed to the producer, and
        with them those of every earlier record of their partitions: each sampled record
        among those is observed (from the last records back, at most SCAN of them)."""
        samples = self._samples
        if not samples:
            return
        wanted = {key for key, waiting in samples.items() if waiting}
        if not wanted:
            return
        now = time.time()
        observe = self.histogram.observe
        for record in reversed(records[-SCAN:]):
            lineage = record.lineage
            key = (lineage.topic, lineage.partition)
            if key in wanted:
                wanted.discard(key)
                waiting = samples[key]
                while waiting and waiting[0][0] <= lineage.offset:
                    observe(now - waiting.popleft()[1])
                if not wanted:
                    return
