"""The alert store keeps the newest alerts, registers its pipeline, and tells a reader's
cache when what it holds changed."""

import pytest
import redis

from shared.alert_store import AlertStore
from shared.keys import PIPELINES
from shared.messages import DriftAlert, Lineage


@pytest.fixture
def client(stack):
    c = redis.Redis.from_url(stack.redis_url)
    c.flushdb()
    yield c
    c.close()


def alert(i: int, ts: float | None = None) -> DriftAlert:
    return DriftAlert(
        f"a{i}", "p", "m", 1, "concept", "error", "ADWIN", {}, f"e{i}",
        float(i) if ts is None else ts, "none",
        Lineage("outcomes", 0, i),
    )  # fmt: skip


def version(store: AlertStore, client: redis.Redis) -> list:
    pipe = client.pipeline(transaction=False)
    store.queue_version(pipe)
    return pipe.execute()


def test_the_newest_are_kept_and_the_version_tells_each_change(client):
    store = AlertStore(client, "p", keep=3)
    empty = version(store, client)
    store.add([alert(i) for i in (1, 2, 3, 4)])
    assert [a["alert_id"] for a in store.latest(10)] == ["a4", "a3", "a2"]
    assert client.smembers(PIPELINES) == {b"p"}
    full = version(store, client)
    assert full != empty
    store.add([alert(3)])  # the same alert again: nothing changes
    assert version(store, client) == full
    store.add([alert(0)])  # older than every kept one: dropped at once
    assert version(store, client) == full
    store.add([alert(25, ts=3.5)])  # between the kept ones: the oldest goes
    assert [a["alert_id"] for a in store.latest(10)] == ["a4", "a25", "a3"]
    between = version(store, client)
    assert between != full
    store.add([alert(5)])  # the newest: the oldest goes
    assert [a["alert_id"] for a in store.latest(10)] == ["a5", "a4", "a25"]
    assert version(store, client) != between
