"""No request waits on what it need not (issue 24): the API lists pipelines from the
registry, never by scanning Redis, and shows Kafka's watermarks from a cache that a
background thread fills, so a silent broker slows no request."""

from __future__ import annotations

import socket
import sys
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import redis

from services.learner.app import publish_spec
from shared.alert_store import AlertStore
from shared.checkpoint.store import CheckpointStore
from shared.keys import PIPELINES, PipelineKeys
from shared.messages import DriftAlert, Lineage
from shared.runtime.status import StatusWriter
from shared.spec import parse_spec
from shared.stack.processes import ManagedProcess, free_port, wait_for_port

from .helpers import wait_until

pytestmark = pytest.mark.integration

SPEC = """
name: lagging
task: binary
models: [{name: logreg, river: river.linear_model.LogisticRegression}]
"""


@pytest.fixture
def client(stack) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(stack.redis_url)
    c.flushdb()
    yield c
    c.close()


def start_api(redis_url: str, bootstrap: str) -> tuple[ManagedProcess, str]:
    port = free_port()
    api = ManagedProcess(
        "api",
        [sys.executable, "-m", "services.cli.main", "api", "--port", str(port)],
        env={
            "HEADWATER_REDIS_URL": redis_url,
            "HEADWATER_KAFKA_BOOTSTRAP": bootstrap,
            "HEADWATER_ALLOW_DEV_CHECKPOINT_KEY": "true",
            "HEADWATER_LOG_FORMAT": "text",
        },
    )
    assert wait_for_port(port, 30, api.proc), api.log_tail()
    return api, f"http://127.0.0.1:{port}"


def scans(client: redis.Redis) -> int:
    """SCAN commands Redis has served."""
    stats = client.info("commandstats")
    return int(stats.get("cmdstat_scan", {}).get("calls", 0))


def alert(pipeline: str) -> DriftAlert:
    return DriftAlert(
        "a1", pipeline, "m", 1, "concept", "error", "ADWIN", {}, "e1", 1.0, "none",
        Lineage("outcomes", 0, 1),
    )  # fmt: skip


def test_pipelines_come_from_the_registry_and_no_request_scans(stack, client):
    # What an older Headwater left: a learner's checkpoint, no registry
    old = CheckpointStore(client, "legacy", "learner", b"k")
    old.write(old.new_epoch(), {}, {"events_seen": 1})
    api, url = start_api(stack.redis_url, stack.bootstrap)
    try:
        wait_until(
            lambda: httpx.get(f"{url}/pipelines").json()["pipelines"] == ["legacy"],
            "the start-up scan to register the older pipeline",
            api,
        )
        # This version's services register their pipeline with each status or alert write
        status = PipelineKeys("fresh").instance_status("features", "host-1")
        StatusWriter(client, status).write({"emitted": 1})
        AlertStore(client, "alerting").add([alert("alerting")])
        # A key a scan for the old marks would find, written by nothing that registers
        client.hset(PipelineKeys("stray").learner_status, "role", "active")
        before = scans(client)
        listed = httpx.get(f"{url}/pipelines").json()["pipelines"]
        answers = {
            p: httpx.get(f"{url}/pipelines/{p}/models").status_code
            for p in ("legacy", "fresh", "alerting", "stray")
        }
        ready = httpx.get(f"{url}/readyz")
        assert before > 0  # the start-up fill's, counted
        assert scans(client) == before  # not one SCAN for any of these requests
    finally:
        assert api.stop() == 0, api.log_tail()
    assert listed == ["alerting", "fresh", "legacy"]
    assert answers == {"legacy": 200, "fresh": 200, "alerting": 200, "stray": 404}
    assert ready.status_code == 200, ready.text
    assert client.smembers(PIPELINES) == {b"alerting", b"fresh", b"legacy"}


class SilentBroker:
    """A port that accepts connections and never answers: a broker that hangs."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                self.held.append(self.sock.accept()[0])
            except OSError:
                return

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


def test_a_silent_kafka_slows_no_model_state_request(stack, client):
    """Four input partitions, each of which took the API up to 2 s to ask a silent broker
    about on every request; the answer comes from the cache, at once, with the lag unknown."""
    spec = parse_spec(SPEC)
    publish_spec(client, spec)
    store = CheckpointStore(client, "lagging", "learner", b"k")
    offsets = {f"features[{p}]": 100 + p for p in range(4)}
    store.write(store.new_epoch(), {}, {"events_seen": 400, "offsets": offsets})
    StatusWriter(client, PipelineKeys("lagging").learner_status, ttl_s=None).write(
        {"role": "active", "events_seen": 400}
    )
    broker = SilentBroker()
    api, url = start_api(stack.redis_url, f"127.0.0.1:{broker.port}")
    took: list[float] = []
    try:
        for _ in range(10):
            started = time.monotonic()
            answer = httpx.get(f"{url}/pipelines/lagging/models/logreg", timeout=30)
            took.append(time.monotonic() - started)
            assert answer.status_code == 200, answer.text
            time.sleep(0.3)
    finally:
        assert api.stop() == 0, api.log_tail()
        broker.close()
    inputs = answer.json()["inputs"]
    assert [(i["partition"], i["next_offset"]) for i in inputs] == [(p, 100 + p) for p in range(4)]
    assert all(i["high_watermark"] is None for i in inputs)
    assert all(i["lag"] is None and i["high_watermark_age_seconds"] is None for i in inputs)
    assert max(took) < 0.5, took
