"""The services on both consumer-group protocols of Apache Kafka 4: classic, and KIP-848's
`consumer` protocol (HEADWATER_GROUP_PROTOCOL), where the broker assigns partitions a few at a
time and the session timeout is the broker's."""

from __future__ import annotations

import threading
from collections import Counter

import pytest

from services.launch import start_service
from services.replay.datasets import dataset_events
from services.replay.pacing import Pacer
from services.replay.recorded import write_events
from services.replay.replayer import replay_file
from shared.kafka import SafeProducer
from shared.redis_store import redis_client
from shared.settings import Settings

from .conftest import BROKER, _fresh_topics, _settings, service_env
from .helpers import assignments, dedupe_by_lineage, read_until, wait_until

pytestmark = pytest.mark.skipif(BROKER != "kafka", reason="Tansu has only the classic protocol")

SPEC = """
name: groups
task: binary
models: [{name: lr, river: river.linear_model.LogisticRegression}]
features:
  windows: [{kind: sliding, size: 1m, lateness: 10s}]
  aggregations: [{field: "0", ops: [count, mean]}, {field: "1", ops: [max]}]
  passthrough: ["2"]
  entity_ttl: 1h
labels: {horizon_events: 1000}
"""
N, RATE, PARTITIONS = 4000, 250, 2  # events, events/s, partitions of every topic


def status(settings: Settings) -> dict[bytes, bytes]:
    return redis_client(settings).hgetall("headwater:groups:learner:status")


@pytest.mark.slow
@pytest.mark.timeout(420, method="thread")
@pytest.mark.parametrize("protocol", ["classic", "consumer"])
def test_services_and_the_standby_work_with_either_group_protocol(
    protocol, stack, tmp_path, request
):
    """Ingest, two features instances and an active learner with a hot standby, 2 partitions.
    Mid-stream, one features instance and the active learner are SIGKILLed: the survivor
    takes the dead member's partition (through the protocol under test) and the standby
    takes over. Every event gets exactly one prediction; every label is learned once."""
    topics = _fresh_topics(stack, request, direct=False, partitions=PARTITIONS)
    settings = _settings(stack, topics)
    env = {
        **service_env(settings),
        "HEADWATER_GROUP_PROTOCOL": protocol,
        "HEADWATER_SESSION_TIMEOUT_MS": "2000",  # classic only; the broker's 6 s for consumer
        "HEADWATER_LEASE_TTL_S": "2",
        "HEADWATER_CHECKPOINT_INTERVAL_S": "1",
    }
    spec = tmp_path / "groups.yaml"
    spec.write_text(SPEC)
    stream = tmp_path / "sea.jsonl"
    write_events(stream, dataset_events("SEA", limit=N, entities=40))

    procs = {
        "ingest": start_service("ingest", spec, env),
        "features-a": start_service("features", spec, env),
        "features-b": start_service("features", spec, env),
        "learner": start_service("learner", spec, env),
    }
    try:
        wait_until(lambda: status(settings).get(b"role") == b"active", "the active learner")
        procs["standby"] = start_service("learner", spec, env)
        for name in ("features-a", "features-b"):
            proc = procs[name]
            wait_until(lambda p=proc: any(assignments(p, topics.events_valid)), name, proc)
        sent: dict[str, int] = {}

        def replay() -> None:
            producer = SafeProducer(settings.kafka_bootstrap)
            result = replay_file(stream, producer, topics, label_delay=5, pacer=Pacer(RATE))
            producer.close()
            sent.update(events=result.events, labels=result.labels)

        writer = threading.Thread(target=replay)
        writer.start()
        wait_until(
            lambda: int(status(settings).get(b"events_seen", 0)) > N // 4, "a quarter of the stream"
        )
        procs["features-a"].kill()
        procs["learner"].kill()
        writer.join(120)
        assert sent == {"events": N, "labels": N}
        wait_until(
            lambda: status(settings).get(b"labels_learned") == str(N).encode(),
            "every label learned",
            procs["standby"],
            timeout=120,
        )
        predictions = read_until(
            settings.kafka_bootstrap,
            topics.predictions,
            lambda out: len({p["event_id"] for p in out}) >= N,
            f"{N} events predicted",
            partitions=PARTITIONS,
            settle=2.0,
        )
        survivor = assignments(procs["features-b"], topics.events_valid)
    finally:
        codes = {name: proc.stop() for name, proc in procs.items()}
    unique, dropped = dedupe_by_lineage(predictions)
    per_event = Counter(p["event_id"] for p in unique)
    assert len(per_event) == N
    assert set(per_event.values()) == {1}, "an event predicted twice"
    assert {name: code for name, code in codes.items() if code != 0} == {
        "features-a": -9,
        "learner": -9,
    }, {name: procs[name].log_tail() for name in codes}
    # Every event predicted shows the dead member's partition was taken over; the survivor
    # held each partition at some point of the rebalances.
    assert set().union(*survivor) == set(range(PARTITIONS)), survivor
    print(
        f"{protocol}: {N} events, {len(predictions)} predictions, {dropped} re-emitted ones "
        f"dropped by lineage, survivor's assignments {survivor}"
    )
