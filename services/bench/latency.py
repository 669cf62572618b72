"""Event -> output latency at a steady rate, as a user sees it: a paced producer stamps each
event's send time, and a consumer of the output topic, in the same process, stamps when the
first output naming that event arrives.

The same measurement times one raw produce -> consume hop (the output topic is the input
topic), which is the baseline the latency targets are ratios of (DESIGN §8).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from shared.codec import decode
from shared.kafka import SafeProducer
from shared.kafka.consumer import CONSUMER_TUNING

Record = tuple[str, bytes, bytes]  # event id, value, key


class LatencyError(RuntimeError):
    pass


@dataclass
class Latency:
    events: int  # measured (the warm-up left out)
    missing: int  # sent but never seen on the output topic
    rate_per_s: float  # the rate the producer kept
    p50_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float
    # the 1st..99th percentiles, for a plot of the distribution
    percentiles_ms: list[float]


def percentile(ordered: Sequence[float], q: float) -> float:
    """The nearest-rank percentile of an ascending sequence (q in 0..1)."""
    if not ordered:
        raise ValueError("no samples")
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def summarize(latencies_s: list[float], missing: int, rate: float) -> Latency:
    ordered = sorted(latencies_s)
    ms = [v * 1000 for v in ordered]
    return Latency(
        len(ms),
        missing,
        rate,
        percentile(ms, 0.5),
        percentile(ms, 0.99),
        percentile(ms, 0.999),
        ms[-1],
        [percentile(ms, q / 100) for q in range(1, 100)],
    )


class OutputWatch:
    """Reads an output topic from its start in a thread and stamps the first arrival of
    each watched event id (outputs are MessagePack maps with an `event_id`)."""

    def __init__(self, bootstrap: str, topic: str, partitions: int) -> None:
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"latency-{topic}",
                "enable.auto.commit": False,
                **CONSUMER_TUNING,
            }
        )
        self._consumer.assign(
            [TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)]
        )
        self.seen: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        seen = self.seen
        while not self._stop.is_set():
            messages = self._consumer.consume(1000, 0.05)
            now = time.perf_counter()
            for msg in messages:
                if msg.error() is None:
                    event_id = decode(msg.value()).get("event_id")
                    if event_id is not None and event_id not in seen:
                        seen[event_id] = now

    def wait_for(self, ids: Sequence[str], timeout: float, alive: Callable[[], bool]) -> int:
        """Waits until every id was seen (or the timeout); returns how many were not."""
        deadline = time.monotonic() + timeout
        while True:
            missing = sum(1 for i in ids if i not in self.seen)
            if not missing or time.monotonic() > deadline:
                return missing
            if not alive():
                raise LatencyError("a process under test exited during the latency run")
            time.sleep(0.1)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self._consumer.close()


def send_paced(
    producer: SafeProducer,
    topic: str,
    batch: Sequence[Record],
    rate: float,
    sent: dict[str, float] | None = None,
    stop: threading.Event | None = None,
) -> float:
    """Sends `batch` at `rate` records/s, stamping each send time in `sent`, until done or
    `stop` is set; returns the rate kept."""
    produce, poll = producer.produce, producer.poll
    started = time.perf_counter()
    done = 0
    for i, (event_id, value, key) in enumerate(batch):
        if stop is not None and stop.is_set():
            break
        due = started + i / rate
        while (now := time.perf_counter()) < due:
            poll()
            if due - now > 0.002:
                time.sleep(min(due - now - 0.001, 0.01))
        if sent is not None:
            sent[event_id] = time.perf_counter()
        produce(topic, value, key)
        poll()
        done += 1
    return done / max(time.perf_counter() - started, 1e-9)


def paced_latency(
    bootstrap: str,
    in_topic: str,
    out_topic: str,
    warmup: Sequence[Record],
    measured: Sequence[Record],
    rate: float,
    out_partitions: int = 1,
    alive: Callable[[], bool] = lambda: True,
    ready_timeout: float = 180.0,
) -> Latency:
    """Sends `warmup` and waits for all its outputs (the process under test is then up and
    settled), then sends `measured` at `rate` events/s and times each to its first output."""
    watch = OutputWatch(bootstrap, out_topic, out_partitions)
    producer = SafeProducer(bootstrap)
    try:
        for _, value, key in warmup:
            producer.produce(in_topic, value, key)
        producer.flush()
        if watch.wait_for([r[0] for r in warmup], ready_timeout, alive):
            raise LatencyError(f"no output for the warm-up on {out_topic} in {ready_timeout:.0f} s")
        sent: dict[str, float] = {}
        kept = send_paced(producer, in_topic, measured, rate, sent)
        producer.flush()
        missing = watch.wait_for(list(sent), 30.0, alive)
    finally:
        watch.close()
        producer.close()
    latencies = [watch.seen[i] - at for i, at in sent.items() if i in watch.seen]
    if not latencies:
        raise LatencyError(f"none of {len(sent)} events reached {out_topic}")
    return summarize(latencies, missing, kept)
