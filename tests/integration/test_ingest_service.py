"""The ingest service through Kafka: normalised valid records, dead letters, deduplication."""

from __future__ import annotations

import json
import random
import signal
import threading
import time
from pathlib import Path

import pytest

from services.ingest.app import run_ingest
from services.launch import start_service
from shared.checkpoint.store import CheckpointStore
from shared.codec import encode
from shared.kafka import SafeProducer
from shared.messages import Event, Label
from shared.redis_store import redis_client
from shared.schemas import validator
from shared.spec import parse_spec

from .conftest import ThreadedService, service_env
from .helpers import UnsubscribedConsumer, read_topic, read_until

SPEC = """
name: ingest
task: binary
models: [{name: lr, river: river.linear_model.LogisticRegression}]
"""


def status(settings) -> dict[bytes, bytes]:
    client = redis_client(settings)
    keys = client.keys("headwater:ingest:ingest-status:*")
    return client.hgetall(keys[0]) if keys else {}


def wait_for(predicate, timeout: float, what: str, proc=None) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc is None or proc.alive(), f"ingest exited:\n{proc.log_tail(60)}"
        if proc is not None and time.monotonic() >= deadline:
            proc.proc.send_signal(signal.SIGUSR1)  # its threads' stacks, into the log
            time.sleep(0.5)
        assert time.monotonic() < deadline, f"timed out waiting for {what}" + (
            f"\n{proc.log_tail(60)}" if proc else ""
        )
        time.sleep(0.05)


T = 1_795_255_200.0  # 2026-11-21T10:00:00Z


@pytest.mark.tansu_smoke
def test_valid_records_pass_normalised_and_bad_ones_are_dead_lettered(ingest_settings):
    settings, topics = ingest_settings, ingest_settings.topics
    sent = [
        encode({"event_id": "a", "entity": "u1", "ts": T + 0.5, "data": {"x": 1.0}}),
        json.dumps(  # JSON, ISO time, NaN from Python's json.dumps: missing by default
            {
                "event_id": "b",
                "entity": "u2",
                "ts": "2026-11-21T10:00:00Z",
                "data": {"x": float("nan")},
            }
        ).encode(),
        encode({"event_id": "c", "entity": "u1", "ts": 1_795_255_201, "data": {}, "label": True}),
        encode({"event_id": "a", "entity": "u1", "ts": T + 0.5, "data": {"x": 1.0}}),  # a retry
        b"\xc1garbage",
        encode({"event_id": "d", "entity": "u1", "ts": T, "data": {}, "colour": "red"}),
        encode(["not", "a", "map"]),
    ]
    service = ThreadedService(run_ingest, settings, parse_spec(SPEC)).start()
    try:
        producer = SafeProducer(settings.kafka_bootstrap)
        for value in sent:
            producer.produce(topics.events, value, b"producer-key")
        producer.produce(
            topics.labels, encode({"event_id": "a", "entity": "u1", "ts": T + 3, "label": False})
        )
        producer.produce(topics.labels, b'{"event_id": "b", "entity": "u2", "ts": 14}')
        producer.close()
        valid = read_topic(settings.kafka_bootstrap, topics.events_valid, 3)
        labels = read_topic(settings.kafka_bootstrap, topics.labels_valid, 1)
        dead = read_topic(settings.kafka_bootstrap, topics.events_dlq, 4)
        wait_for(lambda: status(settings).get(b"in") == b"9", 10, "the status")
    finally:
        service.join()
    events = [Event.from_wire(v) for v in valid]
    assert [e.event_id for e in events] == ["a", "b", "c"]
    assert events[1].ts == T
    assert events[1].data == {"x": None}
    assert events[2].ts == T + 1
    assert isinstance(valid[2]["ts"], float)
    assert [Label.from_wire(x) for x in labels] == [Label("a", "u1", T + 3, False)]
    for d in dead:
        validator("dlq/v1").validate(d)
    dead.sort(key=lambda d: (d["source_topic"] != topics.events, d["offset"]))
    assert [(d["source_topic"], d["offset"], d["reason"]) for d in dead] == [
        (topics.events, 4, "bad_msgpack"),
        (topics.events, 5, "unknown_field"),
        (topics.events, 6, "not_an_object"),
        (topics.labels, 1, "missing_field"),
    ]
    assert dead[0]["original"] == b"\xc1garbage"
    counts = status(settings)
    assert counts[b"in"] == b"9"
    assert counts[b"valid"] == b"4"
    assert counts[b"deduplicated"] == b"1"
    assert counts[b"dead_lettered"] == b"4"
    assert counts[b"dlq:unknown_field"] == b"1"


def test_a_record_ingest_fails_on_is_dead_lettered_and_counted_in_prometheus(
    ingest_settings, monkeypatch
):
    """A defect of ours on one record (here a normaliser that raises) costs that record a
    dead letter, not a crash that would hit the same record after every restart."""
    import urllib.request

    import services.ingest.service as ingest_module
    from shared.stack.processes import free_port

    real = ingest_module.normalise_event

    def failing(obj, policy):
        if obj.get("event_id") == "boom":
            raise RuntimeError("normaliser defect")
        return real(obj, policy)

    monkeypatch.setattr(ingest_module, "normalise_event", failing)
    port = free_port()
    settings = ingest_settings.model_copy(update={"metrics_port": port})
    topics = settings.topics
    service = ThreadedService(run_ingest, settings, parse_spec(SPEC)).start()
    try:
        producer = SafeProducer(settings.kafka_bootstrap)
        for event_id in ("a", "boom", "c"):  # JSON: the full route, where normalising happens
            value = {"event_id": event_id, "entity": "u1", "ts": T, "data": {"x": 1.0}}
            producer.produce(topics.events, json.dumps(value).encode())
        producer.close()
        valid = read_topic(settings.kafka_bootstrap, topics.events_valid, 2)
        dead = read_topic(settings.kafka_bootstrap, topics.events_dlq, 1)

        def scraped() -> str:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                return r.read().decode()

        expected = [
            'headwater_ingest_dead_letters_total{reason="ingest_error"} 1.0',
            'headwater_ingest_records_total{outcome="valid"} 2.0',
            'headwater_ingest_records_total{outcome="in"} 3.0',
        ]
        wait_for(lambda: all(e in scraped() for e in expected), 10, "the counters")
    finally:
        service.join()
    assert [v["event_id"] for v in valid] == ["a", "c"]
    assert [(d["offset"], d["reason"]) for d in dead] == [(1, "ingest_error")]
    assert "RuntimeError: normaliser defect" in dead[0]["message"]


def test_ingest_stops_when_it_fails_on_every_record(ingest_settings, monkeypatch):
    """A defect hitting every record (a bad deploy) stops ingest with a clear error after
    MAX_INGEST_ERRORS_IN_ROW records, rather than dead-lettering the whole stream."""
    import pytest

    import services.ingest.service as ingest_module

    def broken(obj, policy):
        raise RuntimeError("normaliser defect")

    monkeypatch.setattr(ingest_module, "normalise_event", broken)
    settings, topics = ingest_settings, ingest_settings.topics
    service = ThreadedService(run_ingest, settings, parse_spec(SPEC)).start()
    producer = SafeProducer(settings.kafka_bootstrap)
    for i in range(ingest_module.MAX_INGEST_ERRORS_IN_ROW + 50):
        value = {"event_id": f"e{i}", "entity": "u1", "ts": T, "data": {}}
        producer.produce(topics.events, json.dumps(value).encode())
    producer.close()
    service.thread.join(60)
    assert not service.thread.is_alive(), "ingest kept going"
    with pytest.raises(ingest_module.IngestDefectError, match="100 records in a row"):
        service.join()
    dead = read_topic(settings.kafka_bootstrap, topics.events_dlq, 99)
    assert {d["reason"] for d in dead} == {"ingest_error"}


def test_records_are_keyed_by_entity_and_carry_their_lineage(ingest_settings):
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    settings, topics = ingest_settings, ingest_settings.topics
    service = ThreadedService(run_ingest, settings, parse_spec(SPEC)).start()
    try:
        producer = SafeProducer(settings.kafka_bootstrap)
        producer.produce(
            topics.events, encode({"event_id": "a", "entity": "u7", "ts": 1.0, "data": {}})
        )
        producer.close()
        read_topic(settings.kafka_bootstrap, topics.events_valid, 1)
    finally:
        service.join()
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": "k"})
    consumer.assign([TopicPartition(topics.events_valid, 0, OFFSET_BEGINNING)])
    msg = consumer.consume(1, 10)[0]
    consumer.close()
    assert msg.key() == b"u7"
    assert dict(msg.headers())["headwater-lineage"] == f"{topics.events}:0:0".encode()


def test_retries_reach_events_valid_once_across_sigkills(ingest_settings, tmp_path: Path):
    """Every event sent twice; ingest SIGKILLed at random moments and restarted."""
    settings, topics = ingest_settings, ingest_settings.topics
    spec_file = tmp_path / "ingest.yaml"
    spec_file.write_text(SPEC)
    n = 20_000
    rng = random.Random(11)

    def produce() -> None:
        """A producer still writing while ingest is killed: ~10k records/s."""
        producer = SafeProducer(settings.kafka_bootstrap)
        for i in range(n):
            value = encode(
                {"event_id": f"e{i}", "entity": f"u{i % 97}", "ts": 1000.0 + i, "data": {"x": i}}
            )
            producer.produce(topics.events, value)
            if i % 50 == 0:
                producer.produce(topics.events, b"\x00broken")  # and some dead letters
            producer.produce(topics.events, value)  # the retry
            if i % 10 == 0:  # ~30 s of stream: each of the four kills below comes mid-stream
                time.sleep(0.01)
        producer.close()

    writer = threading.Thread(target=produce)
    writer.start()
    env = {
        **service_env(settings),
        "HEADWATER_CHECKPOINT_EVERY_RECORDS": "3000",
        "HEADWATER_SESSION_TIMEOUT_MS": "2000",  # the killed member's partitions move sooner
    }
    client = redis_client(settings)
    store = CheckpointStore(client, "ingest", "ingest-events-p0", b"-")

    def checkpointed() -> int:
        versions = store.versions()
        return int(versions[0].meta["next_offset"]) if versions else 0

    logs, at_kill = [], []
    for _ in range(4):
        before = checkpointed()
        proc = start_service("ingest", spec_file, env)
        wait_for(lambda b=before: checkpointed() > b + 100, 60, "progress", proc)
        time.sleep(rng.uniform(0, 0.3))
        proc.kill()
        at_kill.append(checkpointed())
        logs.append(proc.log_tail(200))
        proc.cleanup()
    total = 2 * n + n // 50
    proc = start_service("ingest", spec_file, env)
    try:
        # its loop is up (so SIGTERM is handled) once it publishes its status
        wait_for(
            lambda: client.keys(f"headwater:ingest:ingest-status:*-{proc.proc.pid}"),
            30,
            "start",
            proc,
        )
        writer.join(60)
        wait_for(lambda: checkpointed() >= total, 120, "the whole stream", proc)
    finally:
        assert proc.stop() == 0, proc.log_tail()
    print("input offset checkpointed at each kill:", at_kill)
    assert sum(0 < k < total for k in at_kill) >= 2, at_kill  # killed mid-stream
    logs.append(proc.log_tail(200))
    # the recovery path ran: a restart found records written after the last checkpoint
    assert any("will not be written again" in log for log in logs[1:]), logs
    valid = read_until(
        settings.kafka_bootstrap,
        topics.events_valid,
        lambda out: len(out) >= n,
        f"{n}",
        60,
        settle=2.0,
    )
    ids = [v["event_id"] for v in valid]
    assert len(ids) == n  # once each
    assert set(ids) == {f"e{i}" for i in range(n)}  # none lost
    dead = read_until(
        settings.kafka_bootstrap,
        topics.events_dlq,
        lambda out: len(out) >= n // 50,
        "dlq",
        60,
        settle=2.0,
    )
    assert sorted(d["offset"] for d in dead) == sorted({d["offset"] for d in dead})
    assert len(dead) == n // 50
    meta = store.versions()[0].meta
    assert (meta["in"], meta["valid"], meta["deduplicated"], meta["dead_lettered"]) == (
        total,
        n,
        n,
        n // 50,
    )


def test_a_rebalance_while_a_crashed_owners_outputs_lie_ahead_writes_none_again(
    ingest_settings, monkeypatch
):
    """A restarted ingest skips what the crashed owner wrote after its last checkpoint; a
    rebalance before it has read past those records (the dead member's session expiring)
    checkpoints and restores again, and must still skip them."""
    from confluent_kafka import Message, TopicPartition

    import services.ingest.app as ingest_app
    from services.ingest.app import build_ingest

    monkeypatch.setattr(ingest_app, "BatchConsumer", UnsubscribedConsumer)

    settings, topics = ingest_settings, ingest_settings.topics
    spec = parse_spec(SPEC)
    values = [
        encode({"event_id": f"e{i}", "entity": "u", "ts": T + i, "data": {"x": i}})
        for i in range(100)
    ]
    producer = SafeProducer(settings.kafka_bootstrap)
    for value in values:
        producer.produce(topics.events, value)
    producer.close()
    msgs = [
        Message(topic=topics.events, partition=0, offset=i, value=v, key=None)
        for i, v in enumerate(values)
    ]
    tp, key = TopicPartition(topics.events, 0), (topics.events, 0)

    crashed = build_ingest(settings, spec)
    crashed.on_assign([tp])
    crashed.handle_batch(msgs[:50])
    crashed.checkpoint([key])
    crashed.handle_batch(msgs[50:])
    crashed.producer.flush()  # written, never checkpointed: then SIGKILL

    ingest = build_ingest(settings, spec)
    try:
        ingest.on_assign([tp])
        assert ingest.owned[key].state.written == set(range(50, 100))
        ingest.handle_batch(msgs[50:60])
        ingest.on_revoke([tp])  # a rebalance: checkpoint, then the same partition again
        ingest.on_assign([tp])
        assert ingest.owned[key].state.written == set(range(60, 100))
        ingest.handle_batch(msgs[60:])
        ingest.checkpoint([key])
    finally:
        for service in (crashed, ingest):
            service.close()  # no checkpoint on the way out (the crashed one is fenced)
    valid = read_until(
        settings.kafka_bootstrap,
        topics.events_valid,
        lambda out: len(out) >= 100,
        "100",
        30,
        settle=2.0,
    )
    assert sorted(v["event_id"] for v in valid) == sorted(f"e{i}" for i in range(100))


def test_a_stale_ingest_owner_cannot_overwrite_a_newer_checkpoint(ingest_settings, monkeypatch):
    """An instance that lost its partition (paused past its session, say) and then tries to
    checkpoint is refused: the new owner's epoch is newer."""
    import pytest
    from confluent_kafka import TopicPartition

    import services.ingest.app as ingest_app
    from services.ingest.app import build_ingest
    from shared.runtime.ownership import FencedError

    monkeypatch.setattr(ingest_app, "BatchConsumer", UnsubscribedConsumer)
    settings, spec = ingest_settings, parse_spec(SPEC)
    tp, key = TopicPartition(settings.topics.events, 0), (settings.topics.events, 0)
    old, new = build_ingest(settings, spec), build_ingest(settings, spec)
    try:
        old.on_assign([tp])
        new.on_assign([tp])  # a newer epoch for the same partition
        epoch = new.owned[key].epoch
        assert epoch > old.owned[key].epoch
        store = CheckpointStore(redis_client(settings), "ingest", "ingest-events-p0", b"-")
        versions = store.versions()
        with pytest.raises(FencedError, match="taken over by another ingest instance"):
            old.checkpoint([key])
        assert store.versions() == versions  # nothing was written
        new.checkpoint([key])
        assert store.versions()[0].epoch == epoch
    finally:
        for service in (old, new):
            service.close()
