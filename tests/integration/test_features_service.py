"""The features service through Kafka, with its online feature store in Redis."""

import redis

from services.features.app import run_features
from services.features.engine import FeatureEngine
from services.features.store import FeatureStore
from services.replay.datasets import dataset_events
from services.replay.recorded import write_events
from services.replay.replayer import replay_file
from shared.kafka import SafeProducer
from shared.messages import FeatureRecord
from shared.schemas import validator
from shared.spec import parse_spec

from .conftest import ThreadedService
from .helpers import read_topic

SPEC = """
name: windows
task: binary
models: [{name: lr, river: river.linear_model.LogisticRegression}]
features:
  windows:
    - {kind: sliding, size: 1m, lateness: 10s}
    - {kind: tumbling, size: 30s}
  aggregations:
    - {field: "0", ops: [count, sum, mean, min, max, std, last]}
    - {field: "1", ops: [mean], windows: [1m]}
  passthrough: ["2"]
  entity_ttl: 1h
"""


def test_features_topic_and_feature_store_after_a_replay(settings, tmp_path):
    spec = parse_spec(SPEC)
    events = list(dataset_events("SEA", limit=3000, entities=40, interval=0.5))
    write_events(tmp_path / "sea.jsonl", events)
    service = ThreadedService(run_features, settings, spec).start()
    try:
        producer = SafeProducer(settings.kafka_bootstrap)
        replay_file(tmp_path / "sea.jsonl", producer, settings.topics)
        producer.close()
        records = read_topic(settings.kafka_bootstrap, settings.topics.features, 3000)
    finally:
        service.join()
    for raw in records[:20]:
        validator("features/v1").validate(raw)
    got = [FeatureRecord.from_wire(r) for r in records]
    assert [r.event for r in got] == events  # the event itself travels unchanged
    assert [r.lineage.offset for r in got] == list(range(3000))
    reference = FeatureEngine(spec.features)
    for record in got:
        assert record.features == reference.process(0, record.event).features
    assert "0_mean_1m" in got[-1].features
    assert "1_mean_1m" in got[-1].features
    store = FeatureStore(redis.Redis.from_url(settings.redis_url), "windows", 3600)
    for entity in ("sea-e0", "sea-e17", "sea-e39"):
        last = [r for r in got if r.event.entity == entity][-1]
        stored = store.read(entity)
        assert stored == {
            "features": last.features,
            "ts": last.event.ts,
            "event_id": last.event.event_id,
        }
    assert store.read("no-such-entity") is None
    client = redis.Redis.from_url(settings.redis_url)
    (status_key,) = client.keys("headwater:windows:features-status:*")
    status = client.hgetall(status_key)
    assert status[b"emitted"] == b"3000"
    assert status[b"partitions"] == b"0"
    assert int(status[b"entities"]) == 40


def test_sigkill_and_restart_re_emits_identical_features(settings, tmp_path):
    """After dropping lineage duplicates, exactly one record per event, identical to an
    uninterrupted run."""
    import random
    import time

    from services.launch import start_service
    from shared.checkpoint.store import CheckpointStore

    from .conftest import service_env
    from .helpers import read_until

    spec_file = tmp_path / "windows.yaml"
    spec_file.write_text(SPEC)
    n = 50_000
    events = list(dataset_events("SEA", limit=n, entities=500, interval=0.1))
    write_events(tmp_path / "sea.jsonl", events)
    producer = SafeProducer(settings.kafka_bootstrap)
    replay_file(tmp_path / "sea.jsonl", producer, settings.topics)
    producer.close()
    env = {**service_env(settings), "HEADWATER_CHECKPOINT_EVERY_RECORDS": "3000"}
    client = redis.Redis.from_url(settings.redis_url)
    store = CheckpointStore(client, "windows", "features-p0", b"-")

    def checkpointed() -> int:
        versions = store.versions()
        return int(versions[0].meta["next_offset"]) if versions else 0

    rng = random.Random(7)
    for _ in range(5):
        before = checkpointed()
        proc = start_service("features", spec_file, env)
        deadline = time.monotonic() + 60
        while checkpointed() <= before:
            assert time.monotonic() < deadline, proc.log_tail()
            time.sleep(0.05)
        time.sleep(rng.uniform(0, 0.5))
        proc.kill()
        proc.cleanup()
    proc = start_service("features", spec_file, env)
    try:
        deadline = time.monotonic() + 120
        # A killed run may have checkpointed the whole stream already: wait for this one to
        # be up (its signal handlers installed) before stopping it.
        while "features service running" not in proc.log_tail(1000):
            assert proc.alive(), proc.log_tail()
            assert time.monotonic() < deadline, proc.log_tail()
            time.sleep(0.05)
        while checkpointed() < n:
            assert time.monotonic() < deadline, proc.log_tail()
            time.sleep(0.1)
    finally:
        assert proc.stop() == 0, proc.log_tail()
    records = [
        FeatureRecord.from_wire(r)
        for r in read_until(
            settings.kafka_bootstrap,
            settings.topics.features,
            lambda out: len({r["lineage"]["offset"] for r in out}) >= n,
            f"every one of the {n} source offsets",
            timeout=120,
            settle=2.0,
        )
    ]
    total = len(records)
    assert total > n  # the kills did cause re-emission
    first: dict[int, FeatureRecord] = {}
    for r in records:
        previous = first.setdefault(r.lineage.offset, r)
        assert previous == r  # a re-emitted record is identical to the first one
    assert sorted(first) == list(range(n))
    reference = FeatureEngine(parse_spec(SPEC).features)
    for offset in range(n):
        assert first[offset].features == reference.process(0, events[offset]).features


def test_learner_drops_features_re_emitted_after_a_restart(settings):
    """Records with an upstream lineage already applied are not learned twice."""
    import time

    from services.learner.app import run_learner
    from shared.codec import encode
    from shared.messages import Event, Lineage

    spec = parse_spec(SPEC)
    learner = ThreadedService(run_learner, settings, spec).start()
    try:
        producer = SafeProducer(settings.kafka_bootstrap)
        for source_offset in (0, 1, 2, 1, 2, 3):  # 1 and 2 re-emitted
            event = Event(f"e{source_offset}", "u", float(source_offset), {"0": 1.0}, True)
            record = FeatureRecord(
                event, {"0_mean_1m": float(source_offset)}, (), Lineage("events", 0, source_offset)
            )
            producer.produce(settings.topics.features, encode(record.to_wire()), b"u")
        producer.close()
        client = redis.Redis.from_url(settings.redis_url)
        deadline = time.monotonic() + 30
        while client.hget("headwater:windows:learner:status", "events_seen") != b"4":
            assert time.monotonic() < deadline, client.hgetall("headwater:windows:learner:status")
            time.sleep(0.1)
        time.sleep(1.5)  # a duplicate, were it learned, would show by now
        status = client.hgetall("headwater:windows:learner:status")
    finally:
        learner.join()
    assert status[b"events_seen"] == b"4"
    assert status[b"labels_learned"] == b"4"
    predictions = read_topic(settings.kafka_bootstrap, settings.topics.predictions, 4)
    assert [p["event_id"] for p in predictions] == ["e0", "e1", "e2", "e3"]


def test_a_record_the_engine_fails_on_is_dead_lettered_as_feature_error(settings, monkeypatch):
    """Fault injection: the engine raises on one record; it goes to the DLQ, the rest flow."""
    import services.features.engine as engine_module
    from shared.codec import encode
    from shared.messages import Event

    real = engine_module.compile_step

    def flaky_step(engine):
        step, source = real(engine)

        def flaky(partition, event):
            if event.event_id == "boom":
                raise ZeroDivisionError("injected")
            return step(partition, event)

        return flaky, source

    monkeypatch.setattr(engine_module, "compile_step", flaky_step)
    service = ThreadedService(run_features, settings, parse_spec(SPEC)).start()
    try:
        producer = SafeProducer(settings.kafka_bootstrap)
        for event_id in ("a", "boom", "b"):
            event = Event(event_id, "u1", 1_795_255_200.0, {"0": 1.0, "1": 2.0, "2": 3.0})
            producer.produce(settings.topics.events_valid, encode(event.to_wire()), b"u1")
        producer.close()
        records = read_topic(settings.kafka_bootstrap, settings.topics.features, 2)
        dead = read_topic(settings.kafka_bootstrap, settings.topics.events_dlq, 1)
    finally:
        service.join()
    assert [FeatureRecord.from_wire(r).event.event_id for r in records] == ["a", "b"]
    assert dead[0]["reason"] == "feature_error"
    assert "ZeroDivisionError: injected" in dead[0]["message"]
    assert dead[0]["offset"] == 1
