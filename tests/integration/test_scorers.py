"""Scorer replicas (`headwater run scorer`) as subprocesses beside ingest and the learner,
the spec's `serving.by: scorers`: three replicas over three partitions serve every event
once after lineage dedupe while one is SIGKILLed and started again, each follows the
learner's new snapshots within 5 s, and a replica pinned to a kept version publishes the
records that version's models give."""

from __future__ import annotations

import threading
import time
import urllib.request
from pathlib import Path

import pytest
import redis
import yaml
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from services.launch import start_service
from services.learner.checkpointing import LearnerState
from services.learner.outputs import predictions
from services.replay.datasets import dataset_events
from shared.checkpoint.store import CheckpointStore
from shared.codec import decode, encode
from shared.messages import Event, Lineage
from shared.models.inputs import model_input
from shared.redis_store import redis_client
from shared.served_versions import read_served
from shared.settings import Settings
from shared.snapshot import SnapshotStore
from shared.stack.processes import free_port

from .conftest import ROOT
from .test_kafka_broker import (
    PARTITIONS,
    PacedProducer,
    churn_env,
    fresh_pipeline,
    learner_status,
    missing_events,
    predictions_per_event,
    stop_all,
    wait,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600, method="thread")]

PIPELINE = "phishing"
PICKUP_S = 5.0  # the bound: a new snapshot served by every replica within it


def scorers_spec(tmp_path: Path) -> Path:
    """ops/pipelines/phishing.yaml with the predictions published by scorers."""
    doc = yaml.safe_load((ROOT / "ops/pipelines/phishing.yaml").read_text())
    doc["serving"] = {"by": "scorers"}
    path = tmp_path / "phishing-scorers.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def served_version(port: int) -> int | None:
    """A replica's headwater_scorer_served_version, from its /metrics (None: no answer)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1) as r:
            text = r.read().decode()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("headwater_scorer_served_version "):
            return int(float(line.split()[1]))
    return None


class VersionWatch(threading.Thread):
    """Every 0.1 s: the snapshot the learner published (version, when) and the version each
    replica serves, as the test sees them from outside."""

    def __init__(self, settings: Settings, ports: dict[str, int]) -> None:
        super().__init__(daemon=True)
        self.store = SnapshotStore(redis_client(settings), PIPELINE, settings.checkpoint_keys())
        self.ports = ports
        self.published: dict[int, float] = {}  # version -> publish time
        self.served: dict[str, list[tuple[float, int]]] = {name: [] for name in ports}
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.1):
            version = self.store.version()
            if version is not None and version not in self.published:
                at = self.store.published_at()
                self.published[version] = at if at is not None else time.time()
            now = time.time()
            for name, port in self.ports.items():
                v = served_version(port)
                if v is not None and v >= 0:
                    self.served[name].append((now, v))

    def pickup_lags(self, name: str, since: float) -> dict[int, float]:
        """Per version published after `since`: seconds until `name` served it or a newer
        one."""
        lags = {}
        for version, at in self.published.items():
            if at < since:
                continue
            first = next((t for t, v in self.served[name] if v >= version and t >= at), None)
            lags[version] = float("inf") if first is None else first - at
        return lags


def test_three_scorers_serve_every_event_once_while_one_is_killed(stack, tmp_path):
    settings = fresh_pipeline(stack, "scorers")
    spec = scorers_spec(tmp_path)
    events = list(dataset_events("Phishing", entities=30, interval=1.0))
    n = len(events)
    env = churn_env(settings)
    ports = {f"scorer-{i}": free_port() for i in range(PARTITIONS)}
    procs = {name: start_service(name.split("-")[0], spec, env) for name in ("ingest", "learner")}
    for name, port in ports.items():
        procs[name] = start_service("scorer", spec, {**env, "HEADWATER_METRICS_PORT": str(port)})
    watch = VersionWatch(settings, ports)
    feed = PacedProducer(stack.bootstrap, settings.topics, events, rate=100)
    try:
        wait(lambda: learner_status(settings, PIPELINE).get(b"role") == b"active", "learner", procs)
        watch.start()
        feed.start()
        feed.wait_for(0.4)
        procs["scorer-1"].kill()
        killed_at = time.time()
        time.sleep(1.0)
        procs["scorer-1"] = start_service(
            "scorer", spec, {**env, "HEADWATER_METRICS_PORT": str(ports["scorer-1"])}
        )
        feed.finish()
        wait(
            lambda: learner_status(settings, PIPELINE).get(b"labels_learned") == str(n).encode(),
            f"the learner to learn all {n} labels",
            procs,
        )
        # a record scored again after the kill may come from a newer snapshot
        served, dropped = predictions_per_event(settings, n, PARTITIONS, identical=False)
        last = max(watch.published)
        wait(
            lambda: all(s and s[-1][1] >= last for s in watch.served.values()),
            f"every replica to serve v{last}",
            procs,
            timeout=30,
        )
        # and the API's page sees them in Redis: the killed replica's field is stale
        told = read_served(redis_client(settings), PIPELINE)
        assert sum(s["version"] == last for s in told.values()) == 3, told
    finally:
        watch.stop.set()
        codes = stop_all(procs, tmp_path / "logs")
    back_at = next(t for t, _ in watch.served["scorer-1"] if t > killed_at)
    lags = {name: watch.pickup_lags(name, back_at if name == "scorer-1" else 0.0) for name in ports}
    worst = {name: max(lag.values()) for name, lag in lags.items()}
    versions = sorted(watch.published)
    print(
        f"events {n}, predictions {len(served)} after dropping {dropped} duplicates; snapshot "
        f"versions {versions[0]}..{versions[-1]}; slowest pick-up per replica {worst}; "
        f"exit codes {codes}"
    )
    assert not missing_events(events, {(m, e): r for (m, e), r in served.items()})
    assert len(served) == 3 * n  # each of the three models, once per event
    # the replicas moved on as the learner published, without stopping
    assert len({r["model_version"] for r in served.values()}) >= 5
    assert all(w <= PICKUP_S for w in worst.values()), lags
    assert status_learned(settings) == n
    assert codes["scorer-0"] == 0, codes
    assert codes["scorer-2"] == 0, codes


def status_learned(settings: Settings) -> int:
    return int(learner_status(settings, PIPELINE)[b"labels_learned"])


def raw_records(settings: Settings, topic: str, n: int, partitions: int) -> list:
    """The first `n` records of `topic` as Kafka holds them (bytes)."""
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": "raw",
            "enable.auto.commit": False,
        }
    )
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    out = []
    deadline = time.monotonic() + 120
    try:
        while len(out) < n:
            assert time.monotonic() < deadline, f"{len(out)} records on {topic}, not {n}"
            out.extend(m for m in consumer.consume(500, 0.2) if m.error() is None)
    finally:
        consumer.close()
    return out


def test_a_pinned_scorer_publishes_what_that_versions_models_predict(stack, tmp_path):
    settings = fresh_pipeline(stack, "pinned")
    spec = scorers_spec(tmp_path)
    events = list(dataset_events("Phishing", entities=30, interval=1.0))[:600]
    env = churn_env(settings)
    procs = {name: start_service(name, spec, env) for name in ("ingest", "learner")}
    feed = PacedProducer(stack.bootstrap, settings.topics, events, rate=200)
    client = redis.Redis.from_url(settings.redis_url.get_secret_value())
    snapshots = SnapshotStore(client, PIPELINE, settings.checkpoint_keys())
    try:
        wait(lambda: learner_status(settings, PIPELINE).get(b"role") == b"active", "learner", procs)
        feed.start()
        feed.finish()
        wait(lambda: len(snapshots.versions()) >= 3, "three kept snapshot versions", procs)
        pinned = snapshots.versions()[1]  # an older one: the learner has moved on
        procs["scorer"] = start_service(
            "scorer", spec, {**env, "HEADWATER_SCORER_VERSION": str(pinned)}
        )
        records = raw_records(settings, settings.topics.predictions, 3 * len(events), PARTITIONS)
    finally:
        stop_all(procs, tmp_path / "logs")
    # What the learner's own checkpoint of that version predicts, built by the learner's code.
    store = CheckpointStore(client, PIPELINE, "learner", settings.checkpoint_keys())
    _, state = store.load(pinned)
    assert isinstance(state, LearnerState)
    core = state.core
    valid = {
        (m.partition(), m.offset()): m
        for m in raw_records(settings, settings.topics.events_valid, len(events), PARTITIONS)
    }
    expected = {}
    for (partition, offset), m in valid.items():
        event = Event.from_wire(decode(m.value()))
        x = model_input(event.data, core.vw_text)
        scores = tuple(model.predict(x) for model in core.models.values())
        lineage = Lineage(settings.topics.events_valid, partition, offset)
        for p in predictions(
            event, pinned, scores, tuple(core.models), PIPELINE, core.task, lineage
        ):
            expected[(partition, offset, p.model)] = encode(p)
    got = {}
    for m in records:
        record = decode(m.value())
        got[(record["lineage"]["partition"], record["lineage"]["offset"], record["model"])] = (
            m.value()
        )
    print(f"pinned v{pinned} of {snapshots.versions()}; {len(got)} predictions compared")
    assert got.keys() == expected.keys()
    differing = [k for k in got if got[k] != expected[k]]
    assert not differing, differing[:5]
