"""The features service against a Bytewax dataflow doing the same, from the same topic.

Stream: `n` events over `entities` entities, one `amount` per event, event times 10 ms
apart; 6 aggregations (count, sum, mean, min, max, std) over 2 windows (sliding 1m,
tumbling 5m). Both read the same pre-loaded topic and write one record per event.
"""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from services.bench.timing import timed_rate
from services.features.app import build_features
from services.features.engine import FeatureEngine
from shared.codec import decode, encode
from shared.kafka import SafeProducer, ensure_topics
from shared.kafka.consumer import CONSUMER_TUNING
from shared.messages import Event
from shared.settings import TopicNames
from shared.spec import parse_spec
from shared.stack import LocalStack
from shared.stack.local_stack import pipeline_topics

SPEC = """
name: bench-features
task: regression
models: [{name: m, river: river.linear_model.LinearRegression}]
features:
  windows: [{kind: sliding, size: 1m}, {kind: tumbling, size: 5m}]
  aggregations: [{field: amount, ops: [count, sum, mean, min, max, std]}]
  time_since_last: false
  entity_ttl: 1h
"""


@dataclass
class FeaturesBench:
    events: int
    entities: int
    features_events_per_s: float
    engine_inprocess_events_per_s: float
    bytewax_events_per_s: float | None
    ratio_vs_bytewax: float | None
    faust_events_per_s: float
    faust_events: int
    ratio_vs_faust: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def bench_stream(n: int, entities: int) -> list[Event]:
    rng = random.Random(42)
    return [
        Event(
            f"b{i}",
            f"u{rng.randrange(entities)}",
            1_704_067_200.0 + i * 0.01,
            {"amount": round(rng.uniform(0, 500), 2)},
        )
        for i in range(n)
    ]


def engine_rate(events: list[Event]) -> float:
    spec = parse_spec(SPEC)
    assert spec.features is not None
    engine = FeatureEngine(spec.features)
    started = time.perf_counter()
    for e in events:
        engine.process(0, e)
    return len(events) / (time.perf_counter() - started)


def service_rate(stack: LocalStack, n: int, timeout: float = 600) -> float:
    settings = stack.settings(log_format="text")
    service = build_features(settings, parse_spec(SPEC))
    return timed_rate(service.run, lambda: service.emitted, service.producer, n, timeout)


def _window_stats(values: list[float]) -> list[Any]:
    if not values:
        return [0, 0.0, None, None, None, None]
    total = math.fsum(values)
    mean = total / len(values)
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / len(values))
    return [len(values), total, mean, min(values), max(values), std]


def bytewax_rate(stack: LocalStack, n: int, out_topic: str) -> float | None:
    """A Bytewax dataflow with the same per-entity windows; None if Bytewax is absent."""
    try:
        import bytewax.operators as op
        from bytewax.connectors.kafka import KafkaSink, KafkaSinkMessage, KafkaSource
        from bytewax.dataflow import Dataflow
        from bytewax.testing import run_main
    except ImportError:
        return None
    marks: dict[str, float] = {}
    seen = [0]

    def parse(msg: Any) -> tuple[str, tuple[float, float, str]]:
        event = decode(msg.value)
        return event["entity"], (event["ts"], event["data"]["amount"], event["event_id"])

    def features(state: list[tuple[float, float]] | None, item: tuple[float, float, str]) -> Any:
        if seen[0] == 0:
            marks["start"] = time.perf_counter()
        ts, amount, event_id = item
        history = [(t, a) for t, a in (state or []) if t > ts - 300.0]
        history.append((ts, amount))
        tumble = ts // 300.0 * 300.0
        sliding = [a for t, a in history if ts - 60.0 < t <= ts]
        tumbling = [a for t, a in history if tumble <= t < tumble + 300.0]
        seen[0] += 1
        if seen[0] == n:
            marks["end"] = time.perf_counter()
        return history, encode(
            {"event_id": event_id, "features": _window_stats(sliding) + _window_stats(tumbling)}
        )

    flow = Dataflow("bench_features")
    source = op.input(
        "in",
        flow,
        KafkaSource(
            [stack.bootstrap],
            [TopicNames().events_valid],
            tail=False,
            # the consumer tuning Headwater's own services get, so neither side waits out
            # a librdkafka default the other does not
            add_config={k: str(v) for k, v in CONSUMER_TUNING.items()},
        ),
    )
    keyed = op.map("parse", source, parse)
    computed = op.stateful_map("features", keyed, features)
    messages = op.map("out", computed, lambda kv: KafkaSinkMessage(kv[0].encode(), kv[1]))
    op.output("sink", messages, KafkaSink([stack.bootstrap], out_topic))
    runner: Any = run_main  # Bytewax's runner is not annotated
    runner(flow)
    if "end" not in marks:
        raise RuntimeError(f"the Bytewax dataflow saw {seen[0]} of {n} events")
    return (n - 1) / (marks["end"] - marks["start"])


def run_features_bench(
    n: int = 100_000, entities: int = 10_000, say: Callable[[str], None] = print
) -> FeaturesBench:
    events = bench_stream(n, entities)
    say(f"{n} events over {entities} entities; 6 aggregations over 2 windows")
    engine = engine_rate(events)
    say(f"  feature engine in-process: {engine:,.0f} events/s")
    with LocalStack(pipeline_topics(TopicNames(), 1)) as stack:
        producer = SafeProducer(stack.bootstrap)
        for e in events:
            # the features service reads what ingest passed: events.valid
            # with the event time as the Kafka timestamp, which faust's windows go by
            producer.produce(
                TopicNames().events_valid,
                encode(e.to_wire()),
                e.entity.encode(),
                timestamp_ms=int(e.ts * 1000),
            )
        producer.close()
        del producer
        ensure_topics(stack.bootstrap, {"bench.bytewax": 1})
        service = service_rate(stack, n)
        say(f"  features service:          {service:,.0f} events/s")
        bytewax = bytewax_rate(stack, n, "bench.bytewax")
        if bytewax is None:
            say("  Bytewax: not installed (pip install '.[bench]')")
        else:
            say(f"  Bytewax dataflow:          {bytewax:,.0f} events/s")
        faust_n = min(n, FAUST_EVENTS)
        ensure_topics(stack.bootstrap, {"bench.faust": 1})
        faust = faust_rate(stack, faust_n, "bench.faust")
        say(f"  faust-streaming app:       {faust:,.0f} events/s (first {faust_n:,} events)")
    return FeaturesBench(
        n,
        entities,
        service,
        engine,
        bytewax,
        None if bytewax is None else service / bytewax,
        faust,
        faust_n,
        service / faust,
    )


FAUST_EVENTS = 5_000  # faust does ~1k events/s here: a prefix gives its rate in seconds


def faust_rate(stack: LocalStack, n: int, out_topic: str, timeout: float = 300) -> float:
    """The faust-streaming baseline, in a child process (faust owns its event loop)."""
    cmd = [
        sys.executable,
        "-m",
        "services.bench.faust_baseline",
        stack.bootstrap,
        TopicNames().events_valid,
        out_topic,
        str(n),
    ]
    # faust keeps its app's data directory; by default that is in the working directory
    with tempfile.TemporaryDirectory(prefix="headwater-faust-") as datadir:
        done = subprocess.run(
            [*cmd, datadir], capture_output=True, text=True, timeout=timeout, check=False
        )
    for line in (done.stdout + done.stderr).splitlines():
        at = line.find('{"events":')
        if at >= 0:
            return float(json.loads(line[at:])["events_per_s"])
    raise RuntimeError(
        f"the faust baseline failed (exit {done.returncode}):\n{done.stderr[-2000:]}"
    )
