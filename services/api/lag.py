"""Kafka's high watermarks for the lag the API shows, asked in the background.

A request never waits on Kafka: it reads what a refresher thread last heard, at most
`HEADWATER_API_LAG_CACHE_S` old, and says how old. A partition is refreshed (about every
half of that) from the first request that asks about it until no request has for five
minutes. The first request about a partition, and every request while Kafka does not answer,
shows the lag as unknown (null), as the API always did when Kafka was slow.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from shared.kafka.connection import KafkaConnection

log = logging.getLogger(__name__)

Partition = tuple[str, int]  # (topic, partition)
FORGET_S = 300.0  # a partition no request asked about for this long is no longer refreshed


@dataclass(frozen=True)
class Mark:
    """A partition's high watermark and how many seconds ago Kafka gave it; both None
    when no figure young enough is known."""

    high: int | None
    age_s: float | None


UNKNOWN = Mark(None, None)


class WatermarkCache:
    """What the refresher heard, when, and which partitions requests want: the pure part,
    on a clock the caller passes (`now`, monotonic seconds). Safe across threads."""

    def __init__(self, max_age_s: float, forget_s: float = FORGET_S) -> None:
        if max_age_s <= 0:
            raise ValueError("max_age_s must be > 0")
        self.max_age_s = max_age_s
        self.refresh_s = max_age_s / 2  # a figure this old is asked for again
        self.forget_s = forget_s
        self._heard: dict[Partition, tuple[int, float]] = {}
        self._asked: dict[Partition, float] = {}
        self._lock = threading.Lock()

    def get(self, partition: Partition, now: float) -> tuple[Mark, bool]:
        """The figure, if at most `max_age_s` old, and whether the partition is new to the
        cache (then the refresher is worth waking)."""
        with self._lock:
            new = partition not in self._asked
            self._asked[partition] = now
            heard = self._heard.get(partition)
        if heard is None or now - heard[1] > self.max_age_s:
            return UNKNOWN, new
        high, at = heard
        return Mark(high, max(0.0, now - at)), new

    def due(self, now: float) -> list[Partition]:
        """Partitions to ask Kafka about: wanted, and with no figure `refresh_s` young.
        Those no request asked about for `forget_s` are forgotten."""
        with self._lock:
            for partition, asked in list(self._asked.items()):
                if now - asked > self.forget_s:
                    del self._asked[partition]
                    self._heard.pop(partition, None)
            return sorted(
                p
                for p in self._asked
                if (heard := self._heard.get(p)) is None or now - heard[1] >= self.refresh_s
            )

    def put(self, partition: Partition, high: int, now: float) -> None:
        with self._lock:
            self._heard[partition] = (high, now)


class Watermarks:
    """The refresher: one thread and one Kafka client (made at the first question, never
    joining a group). `high` reads the cache and never blocks on Kafka."""

    def __init__(
        self,
        kafka: KafkaConnection | str,
        max_age_s: float = 5.0,
        timeout_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.kafka = kafka
        self.timeout_s = timeout_s
        self.cache = WatermarkCache(max_age_s)
        self._clock = clock
        self._consumer: Consumer | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="watermarks", daemon=True)

    def start(self) -> Watermarks:
        self._thread.start()
        return self

    def high(self, topic: str, partition: int) -> Mark:
        mark, new = self.cache.get((topic, partition), self._clock())
        if new:
            self._wake.set()
        return mark

    def close(self) -> None:
        """Stops the refresher, which closes its client (it may be inside a Kafka call for
        up to `timeout_s`)."""
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(self.timeout_s + 5)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self._wake.clear()  # a request's wake during the round starts the next one
                self._round()
                self._wake.wait(self.cache.refresh_s / 2)
        finally:
            if self._consumer is not None:
                self._consumer.close()
                self._consumer = None

    def _round(self) -> None:
        """Ask about every partition due; when Kafka does not answer in time, the rest
        wait for a later round (a round never takes much more than `timeout_s`)."""
        for partition in self.cache.due(self._clock()):
            if self._stop.is_set():
                return
            try:
                high = self._ask(partition)
            except (KafkaException, RuntimeError) as exc:
                log.debug("no watermark from Kafka", extra={"fields": {"error": str(exc)}})
                if _no_answer(exc):
                    return
                continue  # this partition's own problem (say, a deleted topic)
            self.cache.put(partition, high, self._clock())

    def _ask(self, partition: Partition) -> int:
        if self._consumer is None:
            self._consumer = Consumer(
                KafkaConnection.of(self.kafka).config(
                    {
                        "group.id": "headwater-api-watermarks",  # never joins
                        "enable.auto.commit": False,
                        "socket.timeout.ms": int(self.timeout_s * 1000),
                    }
                )
            )
        _, high = self._consumer.get_watermark_offsets(
            TopicPartition(*partition), timeout=self.timeout_s
        )
        return int(high)


_NO_ANSWER = {KafkaError._TIMED_OUT, KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN}


def _no_answer(exc: Exception) -> bool:
    """Kafka did not answer (as opposed to refusing one partition)."""
    error = exc.args[0] if exc.args else None
    return not isinstance(error, KafkaError) or error.code() in _NO_ANSWER
