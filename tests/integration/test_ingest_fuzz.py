"""100k hostile records through a running ingest service (issue acceptance: never crashes or
stalls, every record accounted for, memory bounded)."""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Iterator
from pathlib import Path

import msgpack
import pytest

from services.launch import start_service
from shared.codec import encode
from shared.kafka import SafeProducer
from shared.redis_store import redis_client
from shared.schemas import validator

from .conftest import service_env
from .helpers import peak_rss_mib, read_until, set_topic_config

SPEC = """
name: fuzz
task: binary
models: [{name: lr, river: river.linear_model.LogisticRegression}]
ingest: {dedupe_max_ids: 20000}
"""
T = 1_795_255_200.0


def good(rng: random.Random, i: int) -> dict:
    return {
        "event_id": f"e{i}",
        "entity": f"u{rng.randrange(500)}",
        "ts": T + i * 0.01,
        "data": {"x": rng.random(), "s": rng.choice("abc"), "b": rng.random() < 0.5},
    }


def hostile(seed: int, n: int) -> Iterator[tuple[bool, bytes]]:
    """(to the labels topic?, value)"""
    for i, value in enumerate(_hostile(seed, n)):
        yield i % 10 == 9, value


def _hostile(seed: int, n: int) -> Iterator[bytes]:
    """A mix of everything a broken or malicious producer may send, and valid records."""
    rng = random.Random(seed)
    sent_ok: list[bytes] = []
    for i in range(n):
        event = good(rng, i)
        kind = rng.randrange(16)
        if kind == 0:
            yield rng.randbytes(rng.randrange(0, 300))
        elif kind == 1:
            whole = encode(event)
            yield whole[: rng.randrange(1, len(whole))]
        elif kind == 2:
            whole = json.dumps(event).encode()
            yield whole[: rng.randrange(1, len(whole))]
        elif kind == 3:
            depth = rng.choice([100, 5_000, 100_000])
            yield rng.choice([b"\x91" * depth + b"\xc0", b"[" * depth + b"]" * depth])
        elif kind == 4:
            field = rng.choice(["event_id", "entity", "ts", "data", "label"])
            event[field] = rng.choice([7, 1.5, None, [], {}, "x", True, {"a": [1]}, b"\x00"])
            yield encode(event)
        elif kind == 5:
            del event[rng.choice(["event_id", "entity", "ts", "data"])]
            yield encode(event)
        elif kind == 6:  # a map key that is not a string: at the top, or inside data
            if rng.random() < 0.5:
                yield b"\x81" + msgpack.packb(rng.randrange(100)) + msgpack.packb("v")
            else:
                event["data"][rng.choice([7, 1.5, None, True, b"k", (1, 2)])] = 1.0
                yield msgpack.packb(event, use_bin_type=True)
        elif kind == 7:
            event["data"]["x"] = rng.choice([math.nan, math.inf, -math.inf])
            if rng.random() < 0.3:
                event["ts"] = math.nan
            yield encode(event) if rng.random() < 0.5 else json.dumps(event).encode()
        elif kind == 8:  # integers past 64 bits (JSON) or at MessagePack's limits
            if rng.random() < 0.5:
                event["data"]["big"] = rng.choice([2**64, -(2**63) - 1, 10**30])
                yield json.dumps(event).encode()
            else:
                event["data"]["big"] = rng.choice([2**63, 2**64 - 1, -(2**63)])
                yield msgpack.packb(event, use_bin_type=True)
        elif kind == 9:
            event["data"]["unknown"] = {"nested": 1}
            event["surprise"] = 1
            yield encode(event)
        elif kind == 10 and sent_ok:
            yield rng.choice(sent_ok)  # a producer retry
        elif kind == 11:
            event["ts"] = rng.choice(["2026-11-21T10:00:00Z", "not a time", 1_795_255_200, -3])
            yield json.dumps(event).encode()
        elif kind == 12 and i % 997 == 0:  # a few multi-megabyte strings
            event["data"]["s"] = "z" * rng.choice([200_000, 3_000_000])
            yield encode(event)
        else:
            if i % 10 == 9:  # on the labels topic: a label
                event = {k: event[k] for k in ("event_id", "entity", "ts")} | {"label": True}
            value = encode(event) if rng.random() < 0.7 else json.dumps(event).encode()
            sent_ok.append(value)
            if len(sent_ok) > 5000:
                sent_ok.pop(0)
            yield value


@pytest.mark.slow
def test_100k_hostile_records_are_all_accounted_for(ingest_settings, tmp_path: Path):
    settings, topics = ingest_settings, ingest_settings.topics
    spec_file = tmp_path / "fuzz.yaml"
    spec_file.write_text(SPEC)
    n = 100_000
    proc = start_service("ingest", spec_file, service_env(settings))
    client = redis_client(settings)

    def counts() -> dict[str, int]:
        keys = client.keys("headwater:fuzz:ingest-status:*")
        raw = client.hgetall(keys[0]) if keys else {}
        return {k.decode(): int(float(v)) for k, v in raw.items() if k != b"inputs"}

    try:
        # Kafka refuses records over 1 MiB by default: these topics take what the fuzzer sends.
        for topic in (topics.events, topics.labels):
            set_topic_config(settings.kafka_bootstrap, topic, {"max.message.bytes": "4200000"})
        producer = SafeProducer(settings.kafka_bootstrap, **{"message.max.bytes": 4_000_000})
        sent = 0
        for i, (to_labels, value) in enumerate(hostile(20261121, n)):
            topic = topics.labels if to_labels else topics.events
            producer.produce(topic, value, str(i % 500).encode() if i % 3 else None)
            sent += 1
        producer.close()
        deadline = time.monotonic() + 180
        last, last_change = -1, time.monotonic()
        while counts().get("in", 0) < sent:
            assert proc.alive(), proc.log_tail(40)
            now = counts().get("in", 0)
            if now != last:
                last, last_change = now, time.monotonic()
            assert time.monotonic() - last_change < 30, f"stalled at {now} of {sent}"
            assert time.monotonic() < deadline, f"{now} of {sent} after 180 s"
            time.sleep(0.2)
        time.sleep(1.5)  # the status is published once a second
        peak = peak_rss_mib(proc.proc.pid)
        final = counts()
    finally:
        assert proc.stop() == 0, proc.log_tail(40)
    print(f"ingest peak RSS {peak:.0f} MiB; counts {final}")
    assert sent == n
    assert final["in"] == n
    assert final["valid"] + final["deduplicated"] + final["dead_lettered"] == n
    assert final["valid"] > 10_000  # the valid share really went through
    assert final["deduplicated"] > 1_000
    reasons = {k[4:]: v for k, v in final.items() if k.startswith("dlq:")}
    assert sum(reasons.values()) == final["dead_lettered"]
    assert {"bad_msgpack", "bad_json", "wrong_type", "missing_field", "too_large"} <= set(reasons)
    assert "ingest_error" not in reasons, reasons  # hostile input, not a defect of ours
    assert peak < 600, peak  # bounded: large records are refused, never accumulated
    valid_labels = read_until(
        settings.kafka_bootstrap, topics.labels_valid, lambda out: True, "", 60, settle=3.0
    )
    assert len(valid_labels) > 1000
    valid_events = read_until(
        settings.kafka_bootstrap,
        topics.events_valid,
        lambda out: len(out) >= final["valid"] - len(valid_labels),
        "the valid events",
        timeout=120,
        settle=2.0,
    )
    assert len(valid_events) + len(valid_labels) == final["valid"]
    event_schema = validator("event/v1")
    for record in valid_events[:2000]:
        event_schema.validate(record)
        assert all(
            v is None or not isinstance(v, float) or math.isfinite(v)
            for v in record["data"].values()
        )
    dead = read_until(
        settings.kafka_bootstrap,
        topics.events_dlq,
        lambda out: len(out) >= final["dead_lettered"],
        "every dead letter",
        timeout=120,
        settle=2.0,
    )
    assert len(dead) == final["dead_lettered"]
