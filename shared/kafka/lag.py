"""Consumer lag for Prometheus, off the per-record path.

Per assigned input partition: the records between what the service has handled (its next
offset to handle, from its own state: the checkpointed position moves with it) and the
partition's high watermark. The high watermark is the client's cached one (it comes with
every fetch response), so an update costs microseconds and no broker round trip; it runs
at most once per `interval_s`, from the service's loop.

A broker's high watermark can trail the log's true end (Tansu reports the last batch's
first offset + 1), so a lag below zero is shown as 0: the service has caught up.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping

from prometheus_client import Gauge

from shared.kafka.consumer import BatchConsumer

Partition = tuple[str, int]


class ConsumerLag:
    """Keeps a `consumer_lag{topic,partition}` gauge current, at most once per interval."""

    def __init__(
        self, gauge: Gauge, interval_s: float = 1.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.gauge = gauge
        self.interval_s = interval_s
        self._clock = clock
        self._next_at = float("-inf")
        self._shown: set[Partition] = set()

    def due(self) -> bool:
        """True at most once per interval (then the caller computes and publishes)."""
        now = self._clock()
        if now < self._next_at:
            return False
        self._next_at = now + self.interval_s
        return True

    def update(
        self, consumer: BatchConsumer, handled: Callable[[], Mapping[Partition, int]]
    ) -> None:
        """From a confluent-kafka consumer's cached watermarks. `handled()` (called only when
        due) gives the next offset to handle per (topic, partition), negative or missing
        while none was handled yet."""
        if not self.due():
            return
        positions = handled()
        lags: dict[Partition, int] = {}
        assigned = [(tp.topic, tp.partition) for tp in consumer.assignment]
        for key in assigned:
            marks = consumer.cached_watermarks(*key)
            if marks is None:
                continue
            low, high = marks
            at = positions.get(key, -1)
            if at < 0:  # nothing handled yet: everything from the log's start is behind
                if low < 0 and high > 0:
                    continue  # not known yet
                at = max(low, 0)
            lags[key] = high - at
        self.publish(lags, assigned)

    def publish(self, lags: Mapping[Partition, int], assigned: Collection[Partition]) -> None:
        """Set each partition's lag; drop the series of partitions no longer assigned."""
        for (topic, partition), lag in lags.items():
            self.gauge.labels(topic, str(partition)).set(max(0, lag))
            self._shown.add((topic, partition))
        for key in self._shown - set(assigned):
            self.gauge.remove(key[0], str(key[1]))
            self._shown.discard(key)
