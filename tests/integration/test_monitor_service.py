"""The drift monitor on a real broker and Redis: the alerts equal the engine's in-process
ones, nothing is lost or applied twice across SIGKILLs, bad records are dead-lettered."""

from __future__ import annotations

import itertools
import random
import time
from collections.abc import Iterator
from typing import Any

import pytest
from river import linear_model, preprocessing
from river.datasets import synth

from services.launch import start_service
from services.monitor.engine import DriftEngine
from shared.alert_store import AlertStore
from shared.checkpoint.store import CheckpointStore
from shared.codec import encode
from shared.kafka import SafeProducer
from shared.keys import PipelineKeys
from shared.messages import DriftAlert, Event, Lineage, Outcome
from shared.redis_store import RedisStore
from shared.settings import Settings
from shared.spec import parse_spec

from .conftest import service_env
from .helpers import read_until, wait_until

pytestmark = pytest.mark.integration

SPEC = """
name: drift
task: binary
models:
  - name: lr
    river:
      pipeline: [river.preprocessing.StandardScaler, river.linear_model.LogisticRegression]
"""
N, DRIFT_AT, SHIFT_AT = 30_000, 15_000, 20_000
SHIFTED = "x1"


def stream(n: int = N) -> Iterator[tuple[Event, Outcome]]:
    """SEA whose concept changes abruptly at DRIFT_AT, and whose feature x1 moves up by
    one standard deviation at SHIFT_AT; each event with the outcome test-then-train gives."""
    sea = itertools.chain(
        itertools.islice(synth.SEA(seed=42, variant=0), DRIFT_AT), synth.SEA(seed=7, variant=2)
    )
    model = preprocessing.StandardScaler() | linear_model.LogisticRegression()
    for i, (x, y) in enumerate(itertools.islice(sea, n)):
        data = {f"x{k}": v for k, v in x.items()}
        if i >= SHIFT_AT:
            data[SHIFTED] += 2.887  # SEA's features are uniform on [0, 10]
        p = model.predict_one(data)
        model.learn_one(data, y)
        event = Event(f"e{i}", f"u{i % 50}", 1_700_000_000.0 + i, data, y)
        outcome = Outcome(
            event.event_id,
            event.entity,
            event.ts,
            "drift",
            "lr",
            3,
            "binary",
            p,
            None,
            y,
            "inline",
            0,
            Lineage("features", 0, i),
        )
        yield event, outcome


def load(settings: Settings, records: list[tuple[Event, Outcome]]) -> None:
    """Events on events.valid and outcomes on outcomes, offset i for record i; then, on
    each, a record that cannot be decoded and (outcomes) one of another pipeline."""
    topics = settings.topics
    producer = SafeProducer(settings.kafka_bootstrap)
    for event, outcome in records:
        key = event.entity.encode()
        producer.produce(topics.events_valid, encode(event.to_wire()), key)
        producer.produce(topics.outcomes, encode(outcome.to_wire()), key)
    producer.produce(topics.events_valid, b"\xc1", b"u1")
    producer.produce(topics.outcomes, b"{not json", b"u1")
    other = Outcome(
        "o1",
        "u1",
        1.0,
        "another",
        "lr",
        0,
        "binary",
        True,
        None,
        False,
        "inline",
        0,
        Lineage("features", 0, 0),
    )
    producer.produce(topics.outcomes, encode(other.to_wire()), b"u1")
    producer.close()


def in_process(settings: Settings, records: list[tuple[Event, Outcome]]) -> list[DriftAlert]:
    """The alerts of two engines fed the same records in the same order."""
    spec = parse_spec(SPEC)
    topics = settings.topics
    outcomes, features = (DriftEngine("drift", "binary", spec.drift) for _ in range(2))
    alerts: list[DriftAlert] = []
    for i, (event, outcome) in enumerate(records):
        alerts += features.observe_features(
            event.event_id, event.ts, event.data, Lineage(topics.events_valid, 0, i)
        )
        alerts += outcomes.observe_outcome(outcome, Lineage(topics.outcomes, 0, i))
    return alerts


def alerts_on_topic(settings: Settings, expected: int, settle: float = 2.0) -> list[DriftAlert]:
    values = read_until(
        settings.kafka_bootstrap,
        settings.topics.drift_alerts,
        lambda got: len({v["alert_id"] for v in got}) >= expected,
        f"{expected} distinct alerts",
        timeout=120,
        settle=settle,
    )
    return [DriftAlert.from_wire(v) for v in values]


def position(alert: DriftAlert) -> tuple[str, int]:
    return alert.lineage.topic, alert.lineage.offset


def checkpoint(settings: Settings, topic: str) -> dict[str, Any]:
    """The newest checkpoint's metadata of the monitor's partition 0 of `topic`."""
    store = CheckpointStore(
        RedisStore.from_settings(settings).client, "drift", f"monitor-{topic}-p0", b"unused"
    )
    versions = store.versions()
    return versions[0].meta if versions else {}


def applied(settings: Settings, topic: str) -> int:
    return int(checkpoint(settings, topic).get("next_offset", 0))


@pytest.fixture
def spec_file(tmp_path):
    path = tmp_path / "drift.yaml"
    path.write_text(SPEC)
    return path


@pytest.mark.tansu_smoke
def test_alerts_equal_the_in_process_engines_and_a_restart_applies_nothing_twice(
    settings, spec_file
):
    records = list(stream())
    expected = in_process(settings, records)
    kinds = sorted((a.kind, a.signal) for a in expected)
    assert ("concept", "error") in kinds
    assert ("covariate", SHIFTED) in kinds
    assert not [a for a in expected if a.kind == "covariate" and a.signal != SHIFTED]
    load(settings, records)
    env = {**service_env(settings), "HEADWATER_CHECKPOINT_INTERVAL_S": "1"}
    proc = start_service("monitor", spec_file, env)
    try:
        got = alerts_on_topic(settings, len(expected))
        dead = read_until(
            settings.kafka_bootstrap,
            settings.topics.events_dlq,
            lambda got: len(got) >= 2,
            "2 dead letters",
        )
        wait_until(
            lambda: applied(settings, settings.topics.outcomes) == N + 2, "a checkpoint", proc
        )
    finally:
        code = proc.stop()
    assert code == 0, proc.log_tail(40)
    # the same alerts (ids, statistics), each input's in its order; the two inputs interleave
    # as they are fetched
    assert sorted(got, key=position) == sorted(expected, key=position)
    for topic in (settings.topics.outcomes, settings.topics.events_valid):
        assert [a for a in got if a.lineage.topic == topic] == [
            a for a in expected if a.lineage.topic == topic
        ]
    assert sorted((d["source_topic"], d["reason"]) for d in dead) == sorted(
        [(settings.topics.events_valid, "bad_msgpack"), (settings.topics.outcomes, "bad_json")]
    )
    stored = AlertStore(RedisStore.from_settings(settings).client, "drift").latest(100)
    assert [a["alert_id"] for a in stored] == [
        a.alert_id for a in sorted(expected, key=lambda a: a.ts, reverse=True)
    ]
    meta = checkpoint(settings, settings.topics.outcomes)
    assert meta["reason"] == "shutdown"
    assert meta["outcomes"] == N  # each of this pipeline's outcomes once

    # Restarted: everything before the checkpoint is skipped, the new records are applied.
    more = list(stream(N + 100))[N:]
    producer = SafeProducer(settings.kafka_bootstrap)
    for _event, outcome in more:
        producer.produce(settings.topics.outcomes, encode(outcome.to_wire()), b"u1")
    producer.close()
    proc = start_service("monitor", spec_file, env)
    try:
        wait_until(
            lambda: applied(settings, settings.topics.outcomes) == N + 102, "the new records", proc
        )
    finally:
        code = proc.stop()
    assert code == 0, proc.log_tail(40)
    assert checkpoint(settings, settings.topics.outcomes)["outcomes"] == N + 100
    again = alerts_on_topic(settings, len(expected), settle=1.0)
    assert sorted(again, key=position) == sorted(expected, key=position)  # none re-sent


def test_sigkill_at_random_moments_loses_no_alert_and_applies_no_record_twice(settings, spec_file):
    records = list(stream())
    expected = in_process(settings, records)
    load(settings, records)
    env = {
        **service_env(settings),
        "HEADWATER_CHECKPOINT_EVERY_RECORDS": "1500",
        "HEADWATER_SESSION_TIMEOUT_MS": "2000",  # a killed member's partitions move sooner
    }
    rng = random.Random(3)
    outcomes = settings.topics.outcomes
    kills_mid_stream = 0
    for _ in range(4):
        before = applied(settings, outcomes)
        proc = start_service("monitor", spec_file, env)
        try:
            wait_until(lambda: applied(settings, outcomes) > before, "progress", proc)  # noqa: B023
            time.sleep(rng.uniform(0.0, 0.5))
        finally:
            proc.kill()
            proc.cleanup()
        kills_mid_stream += applied(settings, outcomes) < N
    proc = start_service("monitor", spec_file, env)
    try:
        got = alerts_on_topic(settings, len(expected))
        wait_until(lambda: applied(settings, outcomes) == N + 2, "the whole stream", proc)
    finally:
        code = proc.stop()
    assert code == 0, proc.log_tail(40)
    assert kills_mid_stream == 4
    first: dict[str, DriftAlert] = {}
    for alert in got:
        assert first.setdefault(alert.alert_id, alert) == alert  # a re-sent alert is identical
    assert sorted(first.values(), key=position) == sorted(expected, key=position)
    # every record applied exactly once, across five runs
    assert checkpoint(settings, outcomes)["outcomes"] == N
    assert checkpoint(settings, settings.topics.events_valid)["feature_records"] == N


def test_a_stale_monitor_cannot_overwrite_a_newer_checkpoint(settings):
    """Two owners of one partition (the first paused past its session): the newer epoch
    wins; the older one's checkpoint is refused and nothing of it is written."""
    import asyncio

    from services.monitor.service import OUTCOMES, MonitorService
    from shared.runtime.ownership import FencedError

    client = RedisStore.from_settings(settings).client
    sent: list[tuple[str, bytes | None, bytes]] = []

    async def send(topic: str, key: bytes | None, value: bytes) -> None:
        sent.append((topic, key, value))

    async def flush() -> None:
        return None

    def monitor() -> MonitorService:
        return MonitorService(
            parse_spec(SPEC),
            settings,
            {settings.topics.outcomes: OUTCOMES},
            lambda t, p: CheckpointStore(client, "drift", f"monitor-{t}-p{p}", b"k"),
            AlertStore(client, "drift"),
            send,
            flush,
        )

    records = [encode(o.to_wire()) for _, o in stream(20)]
    topic = settings.topics.outcomes

    async def scenario() -> None:
        stale, newer = monitor(), monitor()
        for offset, raw in enumerate(records[:10]):
            await stale.handle(topic, 0, offset, raw)
        for offset, raw in enumerate(records):  # took over: applies all 20 from scratch
            await newer.handle(topic, 0, offset, raw)
        await newer.checkpoint([(topic, 0)], "cadence")
        with pytest.raises(FencedError, match="taken over by another monitor"):
            await stale.checkpoint([(topic, 0)], "cadence")

    asyncio.run(scenario())
    meta = checkpoint(settings, topic)
    assert (meta["next_offset"], meta["outcomes"]) == (20, 20)  # the newer owner's, intact


REACTING = (
    SPEC
    + """drift:
  covariate: {enabled: false}
  prediction: {enabled: false}
  reaction: {action: reset}
"""
)


def test_the_learner_resets_a_drifted_model_and_the_alert_says_so(settings, tmp_path):
    """The learner service reacts at the outcome where the in-process learner does; the
    monitor publishes that as the concept alert with action reset."""
    from services.learner.core import LearnerCore
    from tests.reference import process

    spec_file = tmp_path / "reacting.yaml"
    spec_file.write_text(REACTING)
    spec = parse_spec(REACTING)
    events = [event for event, _ in stream(20_000)]
    core = LearnerCore.from_spec(spec)
    expected_outcomes: list[Outcome] = []
    for i, event in enumerate(events):
        expected_outcomes += process(core, event, Lineage(settings.topics.events_valid, 0, i))[1]
    monitor = DriftEngine("drift", "binary", spec.drift)
    expected = [
        a
        for i, o in enumerate(expected_outcomes)
        for a in monitor.observe_outcome(o, Lineage(settings.topics.outcomes, 0, i))
    ]
    assert [a.action for a in expected] == ["reset"]
    assert DRIFT_AT <= int(expected[0].event_id[1:]) < DRIFT_AT + 1000

    producer = SafeProducer(settings.kafka_bootstrap)
    for event in events:
        producer.produce(settings.topics.events_valid, encode(event.to_wire()), b"u")
    producer.close()
    env = service_env(settings)
    learner = start_service("learner", spec_file, env)
    watcher = start_service("monitor", spec_file, env)
    try:
        got = alerts_on_topic(settings, 1)
        outcomes = read_until(
            settings.kafka_bootstrap,
            settings.topics.outcomes,
            lambda got: len(got) >= len(expected_outcomes),
            "every outcome",
        )
    finally:
        codes = learner.stop(), watcher.stop()
    assert codes == (0, 0), learner.log_tail(20) + watcher.log_tail(20)
    assert got == expected  # the same alert: id, model version, statistics, action, lineage
    assert [Outcome.from_wire(o) for o in outcomes] == expected_outcomes
    stored = AlertStore(RedisStore.from_settings(settings).client, "drift").latest(10)
    assert [(a["alert_id"], a["action"]) for a in stored] == [(expected[0].alert_id, "reset")]
    redis_store = RedisStore.from_settings(settings)
    status = redis_store.get_hash(PipelineKeys("drift").learner_status)
    assert (status["drift_resets"], status["drift_trials"]) == ("1", "0"), status


def test_re_emitted_features_are_dropped_and_a_gap_is_read_again(settings):
    """A features record re-emitted by a restarted features service (same lineage, a later
    offset) is not observed twice, across a checkpoint too. A record past the next one to
    apply (faust dropped those between in a rebalance) makes the monitor move its consumer
    back, and what faust still had buffered is skipped meanwhile; offsets the broker says the
    log does not hold are taken as absent."""
    import asyncio

    from services.monitor.service import FEATURES, MonitorService
    from shared.messages import FeatureRecord

    client = RedisStore.from_settings(settings).client
    rewinds: list[tuple[str, int, int]] = []

    async def send(topic: str, key: bytes | None, value: bytes) -> None:
        return None

    async def flush() -> None:
        return None

    async def rewind(topic: str, partition: int, offset: int) -> None:
        rewinds.append((topic, partition, offset))

    async def first_offset(topic: str, partition: int, offset: int) -> int | None:
        return min(o for o in at if o >= offset)  # what the broker would say

    def monitor() -> MonitorService:
        return MonitorService(
            parse_spec(SPEC),
            settings,
            {settings.topics.features: FEATURES},
            lambda t, p: CheckpointStore(client, "drift", f"monitor-{t}-p{p}", b"k"),
            AlertStore(client, "drift"),
            send,
            flush,
            rewind,
            first_offset,
        )

    events = [event for event, _ in stream(9)]

    def record(i: int) -> bytes:
        lineage = Lineage(settings.topics.events_valid, 0, i)
        return encode(FeatureRecord(events[i], {"n": 1.0}, (), lineage).to_wire())

    topic = settings.topics.features
    # offset -> record: 0..4, then 0..2 again (a restarted features service), 5, 6; the log
    # has no offsets 10 and 11 (as after transaction markers), then 7 and 8 at 12 and 13.
    at = dict(enumerate([0, 1, 2, 3, 4, 0, 1, 2, 5, 6])) | {12: 7, 13: 8}

    async def handle(m: MonitorService, *offsets: int) -> None:
        for offset in offsets:
            await m.handle(topic, 0, offset, record(at[offset]))

    async def scenario() -> tuple[MonitorService, MonitorService]:
        first = monitor()
        await handle(first, 0, 1, 2, 3, 4, 5)  # 0..4 and the first re-emitted record
        await first.checkpoint([(topic, 0)], "cadence")
        second = monitor()  # takes over from the checkpoint: next offset 6
        await handle(second, 9)  # 6..8 were never handed over: rewind to 6, skip 9
        await handle(second, 9)  # buffered before the rewind: skipped, no second rewind
        await handle(second, 6, 7, 8, 9)  # read again
        await handle(second, 12, 13)  # 10 and 11: absent from the log, as the broker says
        return first, second

    first, second = asyncio.run(scenario())
    assert first.counts["duplicate"] == 1
    assert second.counts["duplicate"] == 2  # offsets 6 and 7: records 1 and 2 again
    assert rewinds == [(topic, 0, 6)]
    owned = second.owned[(topic, 0)]
    assert owned.next_offset == 14
    assert owned.state.engine.counts["feature_records"] == 9  # records 0..8, each once
