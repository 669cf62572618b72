"""Memory: a stream touching a million distinct entities, through a running features
service, keeps its state bounded because idle entities expire (issue 4's memory item)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis

from services.launch import start_service
from shared.codec import encode
from shared.kafka import SafeProducer
from shared.settings import TopicNames
from shared.stack import LocalStack
from shared.stack.local_stack import pipeline_topics

from .conftest import service_env
from .helpers import peak_rss_mib

SPEC = """
name: million
task: regression
models: [{name: m, river: river.linear_model.LinearRegression}]
features:
  windows: [{kind: sliding, size: 1m}, {kind: tumbling, size: 5m}]
  aggregations: [{field: amount, ops: [count, sum, mean, min, max, std]}]
  entity_ttl: 2m
"""
N = 1_000_000
SPACING_S = 0.01  # stream time advances 10 ms per event: 12,000 events fit in the 2 min TTL
RSS_BOUND_MIB = 500  # a million entities' window state alone would be well over 1 GiB


@pytest.mark.slow
def test_a_million_distinct_entities_keep_the_state_bounded(tmp_path: Path) -> None:
    spec_file = tmp_path / "million.yaml"
    spec_file.write_text(SPEC)
    topics = TopicNames()
    with LocalStack(pipeline_topics(topics, 1)) as stack:  # its own: a million records
        settings = stack.settings(log_format="text")
        producer = SafeProducer(stack.bootstrap)
        for i in range(N):
            event = {
                "event_id": f"m{i}",
                "entity": f"entity-{i}",  # every event a new entity
                "ts": 1_704_067_200.0 + i * SPACING_S,
                "data": {"amount": float(i % 997)},
            }
            producer.produce(topics.events_valid, encode(event), event["entity"].encode())
        producer.close()
        proc = start_service("features", spec_file, service_env(settings))
        client = redis.Redis.from_url(stack.redis_url)
        held: list[int] = []
        try:
            deadline = time.monotonic() + 240
            status: dict[bytes, bytes] = {}
            while int(status.get(b"emitted", 0)) < N:
                assert proc.alive(), proc.log_tail(40)
                assert time.monotonic() < deadline, f"{status} after 240 s"
                time.sleep(0.5)
                keys = client.keys("headwater:million:features-status:*")
                status = client.hgetall(keys[0]) if keys else {}
                if b"entities" in status:
                    held.append(int(status[b"entities"]))
            peak = peak_rss_mib(proc.proc.pid)
        finally:
            assert proc.stop() == 0, proc.log_tail(40)
    ttl_events = int(120 / SPACING_S)
    print(
        f"features: {N:,} distinct entities, peak RSS {peak:.0f} MiB, "
        f"entities held at most {max(held):,} (TTL covers {ttl_events:,}), "
        f"expired {int(status[b'expired']):,}"
    )
    assert int(status[b"emitted"]) == N
    assert max(held) <= ttl_events + 1
    assert int(status[b"expired"]) >= N - ttl_events - 1
    assert peak < RSS_BOUND_MIB, peak
