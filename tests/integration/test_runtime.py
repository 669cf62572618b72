"""The stream runtime (shared/runtime/) on a real broker and Redis, through a toy service
written against it (counter.py) and through its parts."""

from __future__ import annotations

import threading
from collections import Counter, defaultdict
from typing import Any

import pytest

from shared.checkpoint.codec import CheckpointFormatError
from shared.kafka import SafeProducer, ensure_topics
from shared.keys import PipelineKeys
from shared.metrics import ServiceMetrics, StreamMetrics
from shared.redis_store import redis_client
from shared.runtime.checkpoints import Checkpoints
from shared.runtime.ownership import FencedError, Ownership
from shared.settings import Settings

from .counter import CounterService, CountsKind
from .helpers import read_until, wait_until

KEYS = [f"k{i}" for i in range(10)]


def produce(settings: Settings, topic: str, n: int, start: int) -> None:
    producer = SafeProducer(settings.kafka_bootstrap)
    for i in range(start, start + n):
        producer.produce(topic, b"x", KEYS[i % len(KEYS)].encode())
    producer.close()


def run_until(service: CounterService, counted: int) -> None:
    """Run the service in a thread until its partitions have counted `counted` records."""
    stop = threading.Event()
    thread = threading.Thread(target=service.run, args=(stop,), daemon=True)
    thread.start()

    def total() -> int:
        return sum(sum(o.state.values()) for o in list(service.owned.values()))

    try:
        wait_until(lambda: total() >= counted, f"{counted} records counted", timeout=90)
    finally:
        stop.set()
        thread.join(60)
    assert not thread.is_alive()


def test_a_service_of_under_100_lines_counts_exactly_once_across_a_restart(settings):
    """Stopped and started again (a new instance), the counter goes on from its checkpoint:
    every key's counts are 1..n, each once, over both runs."""
    source, sink = f"{settings.topics.events}.count-in", f"{settings.topics.events}.count-out"
    ensure_topics(settings.kafka_bootstrap, {source: 2, sink: 2})
    client = redis_client(settings)
    produce(settings, source, 300, 0)
    run_until(CounterService(settings, "toy", source, sink, client), 300)
    produce(settings, source, 200, 300)
    second = CounterService(settings, "toy", source, sink, client)
    run_until(second, 500)
    statuses = list(client.scan_iter(match=PipelineKeys("toy").instance_status("counter", "*")))
    assert statuses, "no status written"

    out = read_until(settings.kafka_bootstrap, sink, lambda o: len(o) >= 500, "500", 60, 2, 1.0)
    counts: dict[str, list[int]] = defaultdict(list)
    for record in out:
        counts[record["key"]].append(record["count"])
    assert {k: sorted(v) for k, v in counts.items()} == {
        k: list(range(1, 51)) for k in KEYS
    }  # 500 records over 10 keys: 1..50 each, none twice, none missing


def _ownership(settings: Settings, kind: Any = None) -> Ownership[Any, Any]:
    client = redis_client(settings)
    return Ownership(kind or CountsKind(client, "toy", settings.checkpoint_keys()))


def test_a_newer_owner_fences_the_older_and_restores_its_state(settings):
    key = ("in", 0)
    old, new = _ownership(settings), _ownership(settings)
    old.take(key).state["a"] += 1
    old.persist([key], "test")
    owned = new.take(key)  # a newer epoch: the old owner is fenced from now on
    assert owned.state == Counter(a=1)
    assert owned.restored_version is not None
    owned.state["a"] += 1
    owned.next_offset = 7
    with pytest.raises(FencedError, match="counter in\\[0\\] was taken over by another counter"):
        old.persist([key], "stale")
    new.persist([key], "test")
    again = _ownership(settings).take(key)
    assert (again.state, again.next_offset) == (Counter(a=2), 7)


def test_a_checkpoint_of_another_state_format_is_refused_clearly(settings):
    client = redis_client(settings)
    newer = CountsKind(client, "toy", settings.checkpoint_keys())
    newer.format = 2
    writer = Ownership(newer)
    writer.take(("in", 0))
    writer.persist([("in", 0)], "test")
    with pytest.raises(CheckpointFormatError, match="written by a newer Headwater"):
        _ownership(settings).take(("in", 0))

    older_only = CountsKind(client, "toy", settings.checkpoint_keys())
    writer = Ownership(older_only)
    writer.take(("in", 1))
    writer.persist([("in", 1)], "test")
    strict = CountsKind(client, "toy", settings.checkpoint_keys())
    strict.format = strict.oldest_format = 2
    with pytest.raises(CheckpointFormatError, match=r"reads formats 2 to 2\. Replay the inputs"):
        _ownership(settings, strict).take(("in", 1))


def test_a_checkpoint_flushes_outputs_then_persists_then_acknowledges(settings):
    ownership = _ownership(settings)
    calls: list[Any] = []

    def acknowledge(offsets: dict[tuple[str, int], int]) -> None:
        store = ownership.owned[("in", 0)].store
        calls.append(("acknowledge", offsets, len(store.versions())))

    metrics = StreamMetrics.create(ServiceMetrics("toy"), "counted")
    checkpoints = Checkpoints(
        ownership, metrics.checkpoint, 3, 3600.0, lambda: calls.append("flush"), acknowledge
    )
    owned = ownership.take(("in", 0))
    assert not checkpoints.due()
    owned.next_offset, owned.unsaved = 2, 2
    assert not checkpoints.due()
    assert metrics.checkpoint.unsaved is not None
    assert metrics.checkpoint.unsaved() == 2
    owned.next_offset, owned.unsaved = 3, 3
    assert checkpoints.due()
    assert checkpoints.at_cadence()
    # flushed first; acknowledged last, when the state (with next offset 3) was written
    assert calls == ["flush", ("acknowledge", {("in", 0): 2}, 1)]
    assert owned.unsaved == 0
    assert not checkpoints.due()
    assert ownership.owned[("in", 0)].store.versions()[0].meta["next_offset"] == 3
