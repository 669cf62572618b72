"""The ingest service against a raw consume + decode of the same topic, in the same run.

The raw loop is the floor any Python consumer pays (confluent-kafka batches, MessagePack
decode); the ingest service adds validation, normalisation, deduplication, dead letters,
produce and checkpoints. The ratio cancels the machine's speed out.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from confluent_kafka import Consumer, TopicPartition
from msgpack import unpackb

from services.bench.timing import timed_rate
from services.ingest.app import build_ingest
from shared.codec import encode
from shared.kafka import SafeProducer
from shared.kafka.consumer import CONSUMER_TUNING
from shared.settings import TopicNames
from shared.spec import parse_spec
from shared.stack import LocalStack
from shared.stack.local_stack import pipeline_topics

SPEC = """
name: bench-ingest
task: binary
models: [{name: lr, river: river.linear_model.LogisticRegression}]
"""


@dataclass
class IngestBench:
    events: int
    duplicates: int
    invalid: int
    ingest_events_per_s: float
    raw_events_per_s: float
    ratio: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def bench_records(n: int, seed: int = 7) -> tuple[list[tuple[bytes, bytes]], int, int]:
    """Typical producer traffic: MessagePack events of 8 fields, 1% retried, 0.5% broken."""
    rng = random.Random(seed)
    out: list[tuple[bytes, bytes]] = []
    duplicates = invalid = 0
    while len(out) < n:
        i = len(out)
        entity = f"user-{rng.randrange(10_000)}"
        event = {
            "event_id": f"evt-{i:09d}",
            "entity": entity,
            "ts": 1_795_255_200.0 + i * 0.001,
            "data": {
                "amount": round(rng.uniform(1, 500), 2),
                "items": rng.randrange(1, 9),
                "country": rng.choice(["fr", "de", "us", "br", "in"]),
                "new_device": rng.random() < 0.1,
                "hour": rng.randrange(24),
                "score": rng.random(),
                "channel": rng.choice(["web", "app"]),
                "discount": rng.random() < 0.3,
            },
        }
        value = encode(event)
        out.append((entity.encode(), value))
        if rng.random() < 0.01 and len(out) < n:
            out.append((entity.encode(), value))
            duplicates += 1
        if rng.random() < 0.005 and len(out) < n:
            out.append((entity.encode(), value[: len(value) // 2]))
            invalid += 1
    return out, duplicates, invalid


def raw_rate(bootstrap: str, topic: str, n: int) -> float:
    """consume + MessagePack decode of every record, timed from the first record to the last."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "bench-raw", **CONSUMER_TUNING}
    )
    consumer.assign([TopicPartition(topic, 0, 0)])
    seen = 0
    started = 0.0
    try:
        while seen < n:
            batch = consumer.consume(500, 1.0)
            if batch and not started:
                started = time.perf_counter()
            for msg in batch:  # as tight as a Python consumer gets
                try:  # noqa: SIM105 - a `with suppress` per record would slow the baseline
                    unpackb(msg.value())  # type: ignore[arg-type]
                except ValueError:
                    pass  # the broken ones: decoding them is the work measured
            seen += len(batch)
        return (n - 1) / (time.perf_counter() - started)
    finally:
        consumer.close()


def service_rate(stack: LocalStack, topics: TopicNames, n: int, timeout: float = 600) -> float:
    settings = stack.settings(log_format="text")
    service = build_ingest(settings, parse_spec(SPEC, "bench"))

    def processed() -> int:
        return sum(o.state.saved.counts["in"] for o in list(service.owned.values()))

    return timed_rate(service.run, processed, service.producer, n, timeout)


def run_ingest_bench(n: int = 200_000, say: Callable[[str], None] = print) -> IngestBench:
    records, duplicates, invalid = bench_records(n)
    topics = TopicNames()
    with LocalStack(pipeline_topics(topics, 1)) as stack:
        producer = SafeProducer(stack.bootstrap)
        for key, value in records:
            producer.produce(topics.events, value, key)
        producer.close()
        say(f"{n:,} events loaded ({duplicates} retried, {invalid} broken)")
        raw = raw_rate(stack.bootstrap, topics.events, n)
        say(f"  raw consume + decode: {raw:,.0f} events/s")
        ingest = service_rate(stack, topics, n)
        say(f"  ingest service:       {ingest:,.0f} events/s")
    return IngestBench(n, duplicates, invalid, ingest, raw, ingest / raw)
