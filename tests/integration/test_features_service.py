"""The features service through Kafka, with its online feature store in Redis."""

import random
import threading
import time

import pytest

from services.features.app import run_features
from services.features.engine import FeatureEngine
from services.replay.datasets import dataset_events
from services.replay.recorded import write_events
from services.replay.replayer import replay_file
from shared.codec import encode
from shared.feature_store import FeatureStore
from shared.kafka import SafeProducer, ensure_topics
from shared.messages import Event, FeatureRecord
from shared.redis_store import redis_client
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


@pytest.mark.tansu_smoke
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
    store = FeatureStore(redis_client(settings), "windows", 3600)
    for entity in ("sea-e0", "sea-e17", "sea-e39"):
        last = [r for r in got if r.event.entity == entity][-1]
        stored = store.read(entity)
        assert stored == {
            "features": last.features,
            "ts": last.event.ts,
            "event_id": last.event.event_id,
        }
    assert store.read("no-such-entity") is None
    client = redis_client(settings)
    assert 3000 < client.ttl("headwater:windows:features:sea-e0") <= 3600  # entity_ttl: 1h
    (status_key,) = client.keys("headwater:windows:features-status:*")
    status = client.hgetall(status_key)
    assert status[b"emitted"] == b"3000"
    assert status[b"partitions"] == b"0"
    assert int(status[b"entities"]) == 40


def out_of_order(events: list[Event], seed: int) -> list[Event]:
    """Some events late within the sliding window's 10 s lateness, some beyond it."""
    rng = random.Random(seed)
    shuffled = []
    for e in events:
        u = rng.random()
        ts = (
            e.ts - rng.uniform(0, 8)
            if u < 0.05
            else e.ts - rng.uniform(15, 60)
            if u < 0.06
            else e.ts
        )
        shuffled.append(Event(e.event_id, e.entity, ts, e.data, e.label))
    return shuffled


def test_sigkill_at_random_moments_of_a_live_stream_re_emits_identical_features(settings, tmp_path):
    """A 50k-event stream, out of order in part, written while the service runs; the service
    is killed with SIGKILL at a random moment of each of 8 stretches of it and restarted.
    After dropping lineage duplicates: exactly one record per event, each identical (event,
    features, late windows, lineage) to what an uninterrupted run of the service emitted."""
    from confluent_kafka import Consumer

    from services.launch import start_service

    from .conftest import service_env
    from .helpers import assignments, end_offset, read_until, wait_until

    spec_file = tmp_path / "windows.yaml"
    spec_file.write_text(SPEC)
    n, kills, pace = 50_000, 8, 5_000  # events/s while a stretch is written
    events = out_of_order(list(dataset_events("SEA", limit=n, entities=500, interval=0.1)), seed=11)
    rng = random.Random(7)
    step = n // (kills + 1)  # stretches of 2,500 to 8,600 events
    cuts = [step * (k + 1) + rng.randint(-step // 2, step // 2) for k in range(kills)]
    stretches = [events[a:b] for a, b in zip([0, *cuts], [*cuts, n], strict=True)]
    producer = SafeProducer(settings.kafka_bootstrap)
    source, out = settings.topics.events_valid, settings.topics.features

    def write(stretch: list[Event]) -> None:
        for i in range(0, len(stretch), 250):
            for e in stretch[i : i + 250]:
                producer.produce(settings.topics.events, encode(e.to_wire()), e.entity.encode())
            producer.poll()
            time.sleep(250 / pace)
        producer.flush()

    def owns_the_partition(proc) -> None:
        """A killed member's session must expire first; then what is written is processed
        live."""
        wait_until(lambda: assignments(proc, source)[-1:] == [{0}], "the assignment", proc)

    env = {
        **service_env(settings),
        "HEADWATER_CHECKPOINT_EVERY_RECORDS": "3000",
        "HEADWATER_SESSION_TIMEOUT_MS": "2000",  # a killed member's partition moves sooner
    }
    killed_while_writing = 0
    reader = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": "hw"})
    for stretch in stretches[:-1]:
        proc = start_service("features", spec_file, env)
        try:
            owns_the_partition(proc)
            before = end_offset(reader, out)
            writer = threading.Thread(target=write, args=(stretch,))
            writer.start()
            started = time.monotonic()
            wait_until(
                lambda: end_offset(reader, out) > before,  # noqa: B023
                "this run's first output",
                proc,
            )
            left = len(stretch) / pace - (time.monotonic() - started)
            time.sleep(rng.uniform(0.1, 0.8) * max(left, 0.0))
            killed_while_writing += writer.is_alive()
        finally:
            proc.kill()
            proc.cleanup()
        writer.join()
    reader.close()
    proc = start_service("features", spec_file, env)
    try:
        owns_the_partition(proc)
        write(stretches[-1])
        records = [
            FeatureRecord.from_wire(r)
            for r in read_until(
                settings.kafka_bootstrap,
                out,
                lambda got: len({r["lineage"]["offset"] for r in got}) >= n,
                f"every one of the {n} source offsets",
                timeout=120,
                settle=2.0,
            )
        ]
    finally:
        code = proc.stop()
    assert code == 0, proc.log_tail()
    producer.close()
    assert killed_while_writing == kills  # every kill came in the middle of the stream
    assert len(records) > n  # the kills did cause re-emission
    first: dict[int, FeatureRecord] = {}
    for r in records:
        previous = first.setdefault(r.lineage.offset, r)
        assert previous == r  # a re-emitted record is identical to the first one
    assert sorted(first) == list(range(n))

    # The same stream through one uninterrupted run (another pipeline name: its own
    # checkpoints and consumer group), into a topic of its own.
    topics = settings.topics.model_copy(update={"features": settings.topics.features + ".ref"})
    ensure_topics(settings.kafka_bootstrap, {topics.features: 1})
    reference_run = ThreadedService(
        run_features,
        settings.model_copy(update={"topics": topics}),
        parse_spec(SPEC.replace("name: windows", "name: windows-ref")),
    ).start()
    try:
        uninterrupted = [
            FeatureRecord.from_wire(r)
            for r in read_topic(settings.kafka_bootstrap, topics.features, n, timeout=120)
        ]
    finally:
        reference_run.join()
    assert [first[offset] for offset in range(n)] == uninterrupted
    assert sum(1 for r in uninterrupted if r.late_windows) > 100  # lateness was exercised
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
        client = redis_client(settings)
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


def test_window_state_moves_with_its_partition_when_instances_join_and_leave(settings, tmp_path):
    """Two partitions; a second instance joins mid-stream and leaves again. Each partition's
    window state travels through its checkpoint, so after dropping lineage duplicates every
    record equals what one engine fed that partition's events in order would answer."""
    from services.launch import start_service

    from .conftest import service_env
    from .helpers import assignments, read_until, wait_until

    names = {
        field: f"{getattr(settings.topics, field)}.2p"
        for field in ("events", "events_valid", "features", "events_dlq")
    }
    names["events_valid"] = names["events"]  # no ingest in between
    topics = settings.topics.model_copy(update=names)
    ensure_topics(settings.kafka_bootstrap, {name: 2 for name in set(names.values())})
    settings = settings.model_copy(update={"topics": topics})
    spec_file = tmp_path / "windows.yaml"
    spec_file.write_text(SPEC)
    env = {**service_env(settings), "HEADWATER_SESSION_TIMEOUT_MS": "2000"}
    n = 9_000
    events = out_of_order(list(dataset_events("SEA", limit=n, entities=60, interval=0.1)), 3)
    producer = SafeProducer(settings.kafka_bootstrap)

    def write(stretch: list[Event]) -> None:
        for i in range(0, len(stretch), 250):
            for e in stretch[i : i + 250]:
                producer.produce(topics.events, encode(e.to_wire()), e.entity.encode())
            producer.poll()
            time.sleep(0.05)
        producer.flush()

    def held(proc) -> set[int]:
        found = assignments(proc, topics.events)
        return found[-1] if found else set()

    first = start_service("features", spec_file, env)
    second = None
    try:
        wait_until(lambda: held(first) == {0, 1}, "the first instance's assignment", first)
        write(events[:3_000])
        second = start_service("features", spec_file, env)
        wait_until(  # one partition each
            lambda: len(held(second)) == 1 and held(first) == {0, 1} - held(second),
            "the partitions to be shared",
            second,
        )
        write(events[3_000:6_000])
        assert second.stop() == 0, second.log_tail()
        wait_until(lambda: held(first) == {0, 1}, "the first instance to hold both again", first)
        write(events[6_000:])
        records = [
            FeatureRecord.from_wire(r)
            for r in read_until(
                settings.kafka_bootstrap,
                topics.features,
                lambda out: (
                    len({(r["lineage"]["partition"], r["lineage"]["offset"]) for r in out}) >= n
                ),
                f"a record for each of the {n} events",
                timeout=120,
                settle=1.0,
                partitions=2,
            )
        ]
    finally:
        producer.close()
        codes = [p.stop() for p in (first, second) if p is not None]
    assert codes == [0, 0], first.log_tail()
    logs = [p.log_tail(100_000) for p in (first, second)]
    for p in (first, second):
        p.cleanup()
    assert "partition restored" in logs[1]  # the second took over a partition's state
    # the first restored one partition when the second joined, both when it left
    assert logs[0].count("partition restored") >= 3
    unique: dict[tuple[int, int], FeatureRecord] = {}
    for r in records:
        previous = unique.setdefault((r.lineage.partition, r.lineage.offset), r)
        assert previous == r
    reference = FeatureEngine(parse_spec(SPEC).features)
    for partition in (0, 1):
        mine = sorted((o, r) for (p, o), r in unique.items() if p == partition)
        assert [o for o, _ in mine] == list(range(len(mine)))
        assert len(mine) > n // 4  # both partitions carry a good share of the stream
        for _, r in mine:
            assert r.features == reference.process(partition, r.event).features


def test_a_stale_features_owner_cannot_overwrite_a_newer_checkpoint(settings, monkeypatch):
    """An instance that lost its partition and then tries to checkpoint is refused."""
    import pytest
    from confluent_kafka import TopicPartition

    import services.features.app as features_app
    from services.features.app import build_features
    from shared.checkpoint.store import CheckpointStore
    from shared.runtime.ownership import FencedError

    from .helpers import UnsubscribedConsumer

    monkeypatch.setattr(features_app, "BatchConsumer", UnsubscribedConsumer)
    spec = parse_spec(SPEC)
    tp = TopicPartition(settings.topics.events_valid, 0)
    old, new = build_features(settings, spec), build_features(settings, spec)
    try:
        old.on_assign([tp])
        new.on_assign([tp])  # a newer epoch for the same partition
        key = (tp.topic, 0)
        epoch = new.owned[key].epoch
        assert epoch > old.owned[key].epoch
        store = CheckpointStore(redis_client(settings), "windows", "features-p0", b"-")
        versions = store.versions()
        with pytest.raises(FencedError, match="taken over by another features instance"):
            old.checkpoint([key], "cadence")
        assert store.versions() == versions  # nothing was written
        new.checkpoint([key], "cadence")
        assert store.versions()[0].epoch == epoch
    finally:
        for service in (old, new):
            service.close()
