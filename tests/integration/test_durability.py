"""State that outlives Redis: the checkpoint topic's copy, what a store does when Redis lost
it, and a service that will not start fresh over evidence of earlier progress."""

from __future__ import annotations

import os
import threading
from collections import Counter, defaultdict
from typing import Any

import msgpack
import pytest
from confluent_kafka import Consumer, TopicPartition

from shared.checkpoint.log import CHUNK_BYTES, CheckpointLog, chunk_key
from shared.checkpoint.store import CheckpointStore, StaleEpochError, StoreResetError
from shared.kafka import ensure_topics
from shared.kafka.admin import Admin
from shared.redis_store import redis_client
from shared.runtime.ownership import FreshStartRefusedError, Ownership
from shared.runtime.restarts import run_restarting
from shared.settings import Settings

from .counter import CounterService, CountsKind
from .helpers import read_until, wait_until
from .test_runtime import KEYS, produce, run_until


def _log(settings: Settings) -> CheckpointLog:
    return CheckpointLog(settings.kafka_bootstrap, settings.checkpoint_topic)


def _records(settings: Settings) -> list[tuple[bytes, bytes | None]]:
    """Every (key, value) on the checkpoint topic, in order."""
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": "read",
            "enable.partition.eof": True,
        }
    )
    consumer.assign([TopicPartition(settings.checkpoint_topic, 0, 0)])
    out: list[tuple[bytes, bytes | None]] = []
    while True:
        msg = consumer.poll(10)
        assert msg is not None, f"no end of the topic after {len(out)} records"
        if msg.error() is not None:
            break  # the end of the partition
        out.append((msg.key(), msg.value()))
    consumer.close()
    return out


def test_the_checkpoint_topic_holds_each_units_newest_checkpoint_in_chunks(settings):
    """A blob over the broker's record limit goes in chunks; the newest copy reads back
    whole, and the copy it replaced is deleted (tombstones) once the new one is in."""
    client = redis_client(settings)
    copies = _log(settings)
    store = CheckpointStore(client, "durable", "unit", b"k", copies=copies)
    big = os.urandom(CHUNK_BYTES * 2 + 1000)  # three chunks
    epoch = store.new_epoch()
    store.write(epoch, {"blob": big, "n": 1}, {})
    store.write(epoch, {"blob": big, "n": 2}, {})
    copies.close()

    saved = _log(settings).latest(store.base)
    assert saved is not None
    assert (saved.version, saved.epoch, saved.chunks) == (2, epoch, 3)
    records = _records(settings)
    key = copies.key(store.base)  # the deployment's name for the unit
    manifests = [msgpack.unpackb(v) for k, v in records if k == key.encode()]
    assert [m["version"] for m in manifests] == [1, 2]
    first = manifests[0]["chunk_id"]
    dropped = [k for k, v in records if v is None]
    assert dropped == [chunk_key(key, first, i) for i in range(3)]
    assert _log(settings).latest("headwater:durable:other:ckpt") is None
    other = CheckpointLog(settings.kafka_bootstrap, settings.checkpoint_topic, "elsewhere")
    assert other.latest(store.base) is None  # another deployment's units are not this one's


def test_the_checkpoint_topic_is_ready_before_the_first_checkpoint(settings, caplog):
    """At start-up, not at the first checkpoint mid-stream (where creating it stalled the
    stream); a broker that cannot be reached then is logged, not fatal."""
    topic = f"{settings.checkpoint_topic}-{os.urandom(3).hex()}"
    copies = CheckpointLog(settings.kafka_bootstrap, topic)
    copies.prepare()
    try:
        assert topic in Admin(settings.kafka_bootstrap).topics(10)
    finally:
        copies.close()
    unreachable = CheckpointLog("127.0.0.1:1", topic, timeout_s=1)
    unreachable.prepare()
    assert "checkpoint topic not ready at start-up" in caplog.text


def test_a_store_that_redis_lost_is_put_back_from_the_topic_and_fences_the_old_writer(settings):
    client = redis_client(settings)
    store = CheckpointStore(client, "durable", "unit", b"k", copies=_log(settings))
    old_epoch = store.new_epoch()
    store.write(old_epoch, {"n": 1}, {"next_offset": 5})
    client.flushdb()  # Redis restarted without persistence, or replaced

    with pytest.raises(StoreResetError, match="owner epoch is 0, writer has 1"):
        store.write(old_epoch, {"n": 2}, {})  # the old owner learns that its state is gone

    again = CheckpointStore(client, "durable", "unit", b"k", copies=_log(settings))
    assert again.recover() == 1
    assert again.recover() is None  # Redis has it now: the topic is not read again
    new_epoch = again.new_epoch()
    assert new_epoch == old_epoch + 1  # above the copy's: its writer is fenced
    info, state = again.load()
    assert (info.version, state, info.meta["next_offset"]) == (1, {"n": 1}, 5)
    with pytest.raises(StaleEpochError) as fenced:
        store.write(old_epoch, {"n": 2}, {})
    assert not isinstance(fenced.value, StoreResetError)
    assert again.write(new_epoch, {"n": 3}, {}) == 2  # versions go on from the copy's


def _count_with_restarts(settings: Settings, source: str, sink: str, copies: Any, stop: Any):
    client = redis_client(settings)
    return threading.Thread(
        target=run_restarting,
        args=(
            "counter",
            lambda: CounterService(settings, "toy", source, sink, client, copies),
            stop,
        ),
        daemon=True,
    )


def test_a_service_whose_redis_is_emptied_mid_run_restores_from_the_topic_and_goes_on(settings):
    """Redis emptied under a running service: its next checkpoint finds the state lost, it
    starts again from the topic's copy, and every key's counts are 1..n exactly once after
    lineage dedupe."""
    source, sink = f"{settings.topics.events}.count-in", f"{settings.topics.events}.count-out"
    ensure_topics(settings.kafka_bootstrap, {source: 2, sink: 2})
    settings = settings.model_copy(update={"checkpoint_interval_s": 0.5})
    client = redis_client(settings)
    copies = _log(settings)
    stop = threading.Event()
    thread = _count_with_restarts(settings, source, sink, copies, stop)
    thread.start()
    try:
        produce(settings, source, 300, 0)
        wait_until(
            lambda: all(copies.latest(f"headwater:toy:counter-p{p}:ckpt") for p in (0, 1)),
            "both partitions' checkpoints copied",
            timeout=60,
        )
        client.flushdb()
        produce(settings, source, 200, 300)
        wait_until(
            lambda: (
                client.exists("headwater:toy:counter-p0:ckpt:latest")
                and client.exists("headwater:toy:counter-p1:ckpt:latest")
            ),
            "the service to write checkpoints again",
            timeout=90,
        )
        out = read_until(
            settings.kafka_bootstrap,
            sink,
            lambda o: len({tuple(r["lineage"]) for r in o}) >= 500,
            "500 distinct records",
            90,
            2,
            1.0,
        )
    finally:
        stop.set()
        thread.join(60)
        copies.close()
    assert not thread.is_alive()
    first: dict[tuple[Any, ...], dict[str, Any]] = {}
    for record in out:
        kept = first.setdefault(tuple(record["lineage"]), record)
        assert kept == record, "a record emitted again differs from the first"
    counts: dict[str, list[int]] = defaultdict(list)
    for record in first.values():
        counts[record["key"]].append(record["count"])
    assert {k: sorted(v) for k, v in counts.items()} == {k: list(range(1, 51)) for k in KEYS}


def test_a_service_will_not_start_fresh_when_its_group_committed_offsets(settings):
    """No checkpoint in Redis nor on the topic, yet the consumer group committed offsets:
    the state is lost, and starting fresh would process everything again. `--reset`
    (HEADWATER_RESET_STATE) starts over deliberately."""
    source, sink = f"{settings.topics.events}.count-in", f"{settings.topics.events}.count-out"
    ensure_topics(settings.kafka_bootstrap, {source: 1, sink: 1})
    settings = settings.model_copy(update={"checkpoint_topic": ""})  # Redis only
    client = redis_client(settings)
    produce(settings, source, 50, 0)
    run_until(CounterService(settings, "toy", source, sink, client), 50)
    client.flushdb()

    service = CounterService(settings, "toy", source, sink, client)
    with pytest.raises(FreshStartRefusedError) as refused:
        service.run(threading.Event())
    text = str(refused.value)
    for part in ("state lost", f"{source}[0] at offset 50", "--reset", "HEADWATER_RESET_STATE"):
        assert part in text, text

    reset = settings.model_copy(update={"reset_state": True})
    run_until(CounterService(reset, "toy", source, sink, client), 50)  # from the start again


def test_reset_starts_a_unit_fresh_despite_its_copy_on_the_topic(settings):
    """Deleting a unit's keys and running with --reset starts over; without --reset the
    copy comes back."""
    client = redis_client(settings)
    kind = CountsKind(client, "toy", settings.checkpoint_keys(), _log(settings))
    writer = Ownership(kind)
    writer.take(("in", 0)).state["a"] += 1
    writer.persist([("in", 0)], "test")
    client.flushdb()
    assert Ownership(kind, reset=True).take(("in", 0)).restored_version is None
    client.flushdb()
    assert Ownership(kind).take(("in", 0)).state == Counter(a=1)
