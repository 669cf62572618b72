"""Apache Kafka's limits, which Tansu does not enforce: a topic's `max.message.bytes` and the
largest future skew of a record's timestamp. A record over a limit is a dead letter or a clear
error, never a crash loop or a silent loss."""

from __future__ import annotations

import time

import pytest

from services.features.app import run_features
from services.ingest.app import run_ingest
from shared.codec import encode
from shared.kafka import DeliveryError, SafeProducer
from shared.spec import parse_spec

from .conftest import BROKER, ThreadedService, headwater, service_env
from .helpers import read_topic, set_topic_config

pytestmark = pytest.mark.skipif(BROKER != "kafka", reason="limits only Apache Kafka enforces")

SPEC = """
name: limits
task: binary
models: [{name: lr, river: river.linear_model.LogisticRegression}]
features:
  windows: [{kind: tumbling, size: 1m}]
  aggregations: [{field: x, ops: [count, mean]}]
  entity_ttl: 1h
"""
LIMIT = 1_000_000  # HEADWATER_MAX_MESSAGE_BYTES' default


def event_of(size: int, event_id: str) -> bytes:
    """A valid event whose MessagePack encoding is exactly `size` bytes."""
    base = {"event_id": event_id, "entity": "u", "ts": 1000.0, "data": {"x": 1.0}}
    fields = {f"s{i}": "z" * 60_000 for i in range((size - 1000) // 60_010)}
    event = {**base, "data": {**base["data"], **fields, "pad": ""}}
    event["data"]["pad"] = "p" * (size - len(encode(event)) - 2)
    value = encode(event)
    assert len(value) == size, len(value)
    return value


def small(event_id: str) -> bytes:
    return encode({"event_id": event_id, "entity": "u", "ts": 1001.0, "data": {"x": 2.0}})


def test_records_over_a_limit_are_dead_lettered_and_the_services_go_on(ingest_settings):
    """`events` takes 3 MB records (its operator allowed them); events.valid and features keep
    Kafka's default, 1,048,588 bytes. Ingest dead-letters what is over its limit; an event
    under it travels on, and the features service dead-letters its record, which the
    features make larger than the limit, instead of stopping at the broker's refusal."""
    settings, topics = ingest_settings, ingest_settings.topics
    set_topic_config(settings.kafka_bootstrap, topics.events, {"max.message.bytes": "3000000"})
    huge, near = event_of(1_500_000, "huge"), event_of(LIMIT - 20, "near")
    ingest = ThreadedService(run_ingest, settings, parse_spec(SPEC)).start()
    features = ThreadedService(run_features, settings, parse_spec(SPEC)).start()
    try:
        producer = SafeProducer(settings.kafka_bootstrap, **{"message.max.bytes": 3_000_000})
        for value in (small("a"), huge, near, small("b")):
            producer.produce(topics.events, value, b"u")
        producer.close()
        valid = read_topic(settings.kafka_bootstrap, topics.events_valid, 3)
        out = read_topic(settings.kafka_bootstrap, topics.features, 2)
        dead = read_topic(settings.kafka_bootstrap, topics.events_dlq, 2)
    finally:
        features.join()
        ingest.join()
    assert [v["event_id"] for v in valid] == ["a", "near", "b"]
    assert [f["event"]["event_id"] for f in out] == ["a", "b"]
    by_service = {d["service"]: d for d in dead}
    assert set(by_service) == {"ingest", "features"}
    assert by_service["ingest"]["reason"] == "too_large"
    assert by_service["ingest"]["original_size"] == len(huge)
    assert by_service["ingest"]["truncated"] is True
    assert by_service["features"]["reason"] == "too_large"
    assert by_service["features"]["source_topic"] == topics.events_valid
    assert "features record of" in by_service["features"]["message"]


def test_a_service_refuses_an_output_topic_that_takes_smaller_records(ingest_settings):
    """Rather than meet the broker's refusal at the first large record, and again at every
    restart: one clear line at start, naming the topic and both figures."""
    settings, topics = ingest_settings, ingest_settings.topics
    set_topic_config(settings.kafka_bootstrap, topics.events_valid, {"max.message.bytes": "500000"})
    result = headwater(
        "run", "ingest", "--spec", "ops/pipelines/phishing.yaml", env=service_env(settings)
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert f"{topics.events_valid!r} takes 500,000 bytes" in result.stderr, result.stderr
    assert "HEADWATER_MAX_MESSAGE_BYTES=1,000,000" in result.stderr, result.stderr


def test_a_timestamp_beyond_the_brokers_future_skew(ingest_settings):
    """Kafka 4 refuses a record stamped more than an hour ahead
    (`log.message.timestamp.after.max.ms`): a producer through Headwater's SafeProducer (as
    `headwater replay` uses) gets that as a clear error, not a silent loss. An event whose own
    `ts` is that far ahead is data, not a Kafka timestamp: ingest writes its records with its
    own clock, so the broker takes them, and the event goes on."""
    settings, topics = ingest_settings, ingest_settings.topics
    ahead_ms = int((time.time() + 2 * 3600) * 1000)
    producer = SafeProducer(settings.kafka_bootstrap)
    producer.produce(topics.events, small("stamped"), b"u", timestamp_ms=ahead_ms)
    with pytest.raises(DeliveryError, match="INVALID_TIMESTAMP"):
        producer.flush()
    ingest = ThreadedService(run_ingest, settings, parse_spec(SPEC)).start()
    try:
        future = {"event_id": "f", "entity": "u", "ts": ahead_ms / 1000, "data": {"x": 1.0}}
        producer.produce(topics.events, encode(future), b"u")
        producer.produce(topics.events, small("after"), b"u")
        producer.close()
        valid = read_topic(settings.kafka_bootstrap, topics.events_valid, 2)
    finally:
        ingest.join()
    assert [v["event_id"] for v in valid] == ["f", "after"]
    assert valid[0]["ts"] == ahead_ms / 1000
