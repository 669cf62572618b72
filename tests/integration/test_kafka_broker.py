"""The whole pipeline (ingest, features, learner, monitor as subprocesses) on Apache Kafka:
through a broker crash and restart, and through scaled-out instances killed mid-stream.

After dropping lineage duplicates, every event has exactly one record on each output."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
import redis
from confluent_kafka import Consumer

from services.launch import start_service
from services.replay.datasets import dataset_events
from services.replay.plan import plan
from shared.checkpoint.store import CheckpointStore
from shared.codec import encode
from shared.kafka import SafeProducer, ensure_topics
from shared.messages import Event
from shared.redis_store import redis_client
from shared.settings import Settings, TopicNames
from shared.stack import LocalStack
from shared.stack.local_stack import pipeline_topics

from .conftest import BROKER, ROOT, service_env
from .helpers import assignments, dedupe_by_lineage, end_offset, read_until

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.timeout(600, method="thread"),
    pytest.mark.skipif(
        BROKER != "kafka", reason="needs Apache Kafka (HEADWATER_TEST_BROKER is not kafka)"
    ),
]

LABEL_DELAY = 10  # labels on the labels topic, each 10 events late (headwater replay)


class PacedProducer(threading.Thread):
    """Writes a replay plan's events and labels at `rate` records/s, as a live source."""

    def __init__(self, bootstrap: str, topics: TopicNames, events: list[Event], rate: float):
        super().__init__(daemon=True)
        self.bootstrap, self.topics, self.rate = bootstrap, topics, rate
        self.sends = list(plan(events, LABEL_DELAY))
        self.sent = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            producer = SafeProducer(self.bootstrap)
            started = time.monotonic()
            for i, send in enumerate(self.sends):
                topic = self.topics.events if send.kind == "event" else self.topics.labels
                producer.produce(topic, encode(send.message.to_wire()), send.key)
                self.sent = i + 1
                time.sleep(max(0.0, started + self.sent / self.rate - time.monotonic()))
            producer.close(timeout=300)  # past a broker outage: librdkafka retries
        except BaseException as exc:
            self.error = exc

    def wait_for(self, fraction: float) -> None:
        while self.sent < fraction * len(self.sends) and self.is_alive():
            time.sleep(0.05)

    def finish(self) -> None:
        self.join(360)
        assert not self.is_alive(), "the producer did not deliver within 6 minutes"
        if self.error is not None:
            raise self.error


def start_all(spec: Path, env: dict[str, str], names: list[str]) -> dict:
    """One process per name, called `ingest-0`, `ingest-1`, ..."""
    seen: Counter = Counter()
    procs = {}
    for name in names:
        procs[f"{name}-{seen[name]}"] = start_service(name, spec, env)
        seen[name] += 1
    return procs


def check_alive(procs: dict) -> None:
    dead = {name: p for name, p in procs.items() if not p.alive()}
    assert not dead, "\n\n".join(
        f"{name} exited with {p.proc.returncode}:\n{p.log_tail(40)}" for name, p in dead.items()
    )


def wait(condition, what: str, procs: dict, timeout: float = 240.0) -> None:
    """Poll `condition`; fail at once if a service exited, or with `what` on a timeout."""
    deadline = time.monotonic() + timeout
    while not condition():
        check_alive(procs)
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.25)


def stop_all(procs: dict, logs: Path | None = None) -> dict[str, int | None]:
    """SIGTERM each; their logs are kept in `logs` if given."""
    codes = {name: p.stop(30) for name, p in procs.items()}
    for name, p in procs.items():
        discard(name, p, logs)
    return codes


def discard(name: str, proc, logs: Path | None) -> None:
    if logs is not None:
        logs.mkdir(exist_ok=True)
        (logs / f"{name}.log").write_text(proc.log_tail(1_000_000))
    proc.cleanup()


def read_all(settings: Settings, topic: str, done, what: str, partitions: int) -> list[dict]:
    return read_until(
        settings.kafka_bootstrap, topic, done, what, timeout=240, partitions=partitions, settle=2.0
    )


def predictions_per_event(
    settings: Settings, n: int, partitions: int, identical: bool = True
) -> tuple[dict, int]:
    """Each model's prediction per event id, lineage duplicates dropped (`identical`: see
    `dedupe_by_lineage`)."""
    records = read_all(
        settings,
        settings.topics.predictions,
        lambda got: len({r["event_id"] for r in got}) >= n,
        f"a prediction for each of {n} events",
        partitions,
    )
    unique, dropped = dedupe_by_lineage(records, identical)
    per_event = Counter((r["model"], r["event_id"]) for r in unique)
    repeated = {k: c for k, c in per_event.items() if c > 1}
    assert not repeated, f"events predicted more than once after lineage dedupe: {repeated}"
    return {(r["model"], r["event_id"]): r for r in unique}, dropped


def drained(
    settings: Settings, pipeline: str, n: int, partitions: int, reader: Consumer, procs: dict
) -> tuple[dict, int]:
    """Wait until the learner learned all `n` labels and the monitor applied every record,
    every service alive; each model's prediction per event, and the duplicates dropped."""
    wait(
        lambda: learner_status(settings, pipeline).get(b"labels_learned") == str(n).encode(),
        f"the learner to learn all {n} labels",
        procs,
    )
    predictions, dropped = predictions_per_event(settings, n, partitions)
    wait(
        lambda: monitor_caught_up(settings, pipeline, reader, partitions),
        "the monitor to apply every record",
        procs,
    )
    check_alive(procs)
    return predictions, dropped


def missing_events(events: list[Event], predictions: dict) -> set[str]:
    return {e.event_id for e in events} - {event_id for _, event_id in predictions}


def check_each_event_once(events: list[Event], predictions: dict, status: dict) -> None:
    """One model: each event predicted once (after lineage dedupe), each label learned."""
    missing = missing_events(events, predictions)
    assert not missing, f"{len(missing)} events without a prediction: {sorted(missing)[:10]}"
    assert len(predictions) == len(events)
    assert status[b"labels_learned"] == str(len(events)).encode(), status


def learner_status(settings: Settings, pipeline: str) -> dict[bytes, bytes]:
    client = redis_client(settings)
    return client.hgetall(f"headwater:{pipeline}:learner:status")


# --- 1. the broker crashes and comes back --------------------------------------------------


@pytest.fixture(scope="module")
def own_stack():
    """A Kafka broker of this module's own, which the test kills (the session's is shared)."""
    with LocalStack(pipeline_topics(TopicNames(), 2), broker="kafka") as s:
        yield s


def test_every_service_rides_out_a_broker_crash_and_loses_nothing(own_stack):
    stack = own_stack
    settings = stack.settings(
        topics=TopicNames(), consumer_group_prefix="restart", log_format="text"
    )
    spec = ROOT / "ops/pipelines/phishing-windows.yaml"
    events = list(dataset_events("Phishing", entities=20, interval=1.0))
    n = len(events)
    env = {**service_env(settings), "HEADWATER_CHECKPOINT_INTERVAL_S": "2"}
    procs = start_all(spec, env, ["ingest", "features", "learner", "monitor"])
    feed = PacedProducer(stack.bootstrap, settings.topics, events, rate=50)
    reader = None
    kills, started = 0, time.monotonic()
    try:
        wait(
            lambda: learner_status(settings, "phishing-windows").get(b"role") == b"active",
            "the learner",
            procs,
        )
        feed.start()
        feed.wait_for(0.2)
        reader = Consumer({"bootstrap.servers": stack.bootstrap, "group.id": "watch"})
        wait(
            lambda: sum(end_offset(reader, "predictions", p) for p in (0, 1)) > 0,
            "the first predictions before the crash",
            procs,
        )
        reader.close()  # its reconnect attempts would fill the output
        reader = None
        feed.wait_for(0.35)
        stack.broker.kill()
        kills += 1
        down_at = feed.sent
        time.sleep(5)
        check_alive(procs)  # nobody gave up while the broker was down
        stack.broker.restart()
        print(f"broker down from record {down_at} to {feed.sent} of {len(feed.sends)}")
        assert feed.sent < len(feed.sends), "the stream ended before the broker came back"
        reader = Consumer({"bootstrap.servers": stack.bootstrap, "group.id": "watch"})
        feed.finish()
        predictions, dropped = drained(settings, "phishing-windows", n, 2, reader, procs)
    finally:
        if reader is not None:
            reader.close()
        status = learner_status(settings, "phishing-windows")
        codes = stop_all(procs)
    missing = missing_events(events, predictions)
    print(
        f"records: {n} events + {n} labels, broker kills: {kills}, prediction duplicates "
        f"dropped: {dropped}, missing: {len(missing)}, labels learned: "
        f"{status.get(b'labels_learned')}, {time.monotonic() - started:.0f} s"
    )
    check_each_event_once(events, predictions, status)
    assert codes == dict.fromkeys(codes, 0), codes


# --- 2. scaled out, one instance of each killed mid-stream ---------------------------------

SEA_SPEC = """
name: churn
task: binary
features:
  windows:
    - {kind: sliding, size: 1m, lateness: 10s}
  aggregations:
    - {field: "0", ops: [mean, max]}
    - {field: "1", ops: [mean, count]}
  passthrough: ["0", "1", "2"]
  entity_ttl: 1h
models:
  - name: lr
    river:
      pipeline: [river.preprocessing.StandardScaler, river.linear_model.LogisticRegression]
drift:
  covariate: {warmup: 100, reference_size: 300, window_size: 300, check_every: 100}
  prediction: {warmup: 100, reference_size: 300, window_size: 300, check_every: 100}
"""
PARTITIONS = 3


def sea_events(n: int) -> list[Event]:
    """SEA whose feature "0" shifts up halfway, so the monitor has covariate drift to see."""
    out = []
    for i, e in enumerate(dataset_events("SEA", limit=n, entities=60, interval=0.1)):
        data = {**e.data, "0": e.data["0"] + 5.0} if i >= n // 2 else e.data
        out.append(Event(e.event_id, e.entity, e.ts, data, e.label))
    return out


def fresh_pipeline(stack: LocalStack, run: str) -> Settings:
    prefix = f"churn-{run}-{uuid.uuid4().hex[:6]}"
    topics = TopicNames(**{f: f"{prefix}.{f}" for f in TopicNames.model_fields})
    ensure_topics(stack.bootstrap, pipeline_topics(topics, PARTITIONS))
    redis.Redis.from_url(stack.redis_url).flushdb()  # checkpoints are keyed by pipeline name
    return stack.settings(topics=topics, consumer_group_prefix=prefix, log_format="text")


def churn_env(settings: Settings) -> dict[str, str]:
    return {
        **service_env(settings),
        "HEADWATER_SESSION_TIMEOUT_MS": "2000",  # a killed member's partitions move soon
        "HEADWATER_CHECKPOINT_INTERVAL_S": "1",
        # The learner waits out a partition stalled by a rebalance, so it merges its inputs
        # in the same order as the uninterrupted run does (README: the ordered merge).
        "HEADWATER_MERGE_IDLE_MS": "20000",
    }


def monitor_meta(settings: Settings, pipeline: str, partitions: int) -> dict[str, Counter]:
    """Per monitor input topic, its partitions' newest checkpoint metadata, summed."""
    client = redis_client(settings)
    out = {}
    for topic in (settings.topics.outcomes, settings.topics.features):
        total: Counter = Counter()
        for p in range(partitions):
            store = CheckpointStore(client, pipeline, f"monitor-{topic}-p{p}", b"-")
            versions = store.versions()
            if versions:
                meta = {k: v for k, v in versions[0].meta.items() if isinstance(v, int)}
                total.update(meta)
                total[f"p{p}"] = (
                    meta["next_offset"],
                    meta.get("outcomes"),
                    meta.get("feature_records"),
                )
        out[topic] = total
    return out


def monitor_caught_up(settings: Settings, pipeline: str, reader, partitions: int) -> bool:
    """The monitor's checkpoints cover every record of its input topics."""
    meta = monitor_meta(settings, pipeline, partitions)
    return all(
        meta[t]["next_offset"] == sum(end_offset(reader, t, p) for p in range(partitions))
        for t in meta
    )


def outputs(settings: Settings, n: int) -> dict:
    """Every output topic, lineage duplicates dropped, keyed so two runs compare."""
    topics = settings.topics

    def read(topic, done, what):
        return read_all(settings, topic, done, what, PARTITIONS)

    valid = read(topics.events_valid, lambda got: len(got) >= n, f"{n} valid events")
    features, features_dropped = dedupe_by_lineage(
        read(topics.features, lambda got: len({r["event"]["event_id"] for r in got}) >= n, "f")
    )
    predictions, predictions_dropped = predictions_per_event(settings, n, PARTITIONS)
    outcomes, outcomes_dropped = dedupe_by_lineage(
        read(topics.outcomes, lambda got: len({r["event_id"] for r in got}) >= n, "outcomes")
    )
    alerts = read(topics.drift_alerts, lambda got: True, "alerts")
    dead = read(topics.events_dlq, lambda got: True, "dead letters")
    meta = monitor_meta(settings, "churn", PARTITIONS)

    def without_lineage(r: dict) -> dict:
        """What two runs share: not the offsets of re-emitting topics, nor the model
        version (a count of checkpoints, which follow the wall clock)."""
        return {k: v for k, v in r.items() if k not in ("lineage", "model_version")}

    return {
        "events.valid": sorted((v["event_id"], v["ts"], v["entity"]) for v in valid),
        "features": {
            r["event"]["event_id"]: (
                r["features"],
                r["late_windows"],
                (r["lineage"]["partition"], r["lineage"]["offset"]),
            )
            for r in features
        },
        "predictions": {k: without_lineage(r) for k, r in predictions.items()},
        "outcomes": sorted(
            (r["model"], r["event_id"], r["prediction"], r["label"]) for r in outcomes
        ),
        "alerts": {a["alert_id"]: without_lineage(a) for a in alerts},
        "dead letters": sorted(
            (
                d["service"],
                d["source_topic"].split(".")[-1],
                d["partition"],
                d["offset"],
                d["reason"],
            )
            for d in dead
        ),
        "monitor outcomes": meta[topics.outcomes]["outcomes"],
        "monitor feature records": meta[topics.features]["feature_records"],
        "monitor partitions": {
            t.split(".")[-1]: [meta[t][f"p{p}"] for p in range(PARTITIONS)] for t in meta
        },
        "duplicates dropped": {
            "events.valid": len(valid) - len({v["event_id"] for v in valid}),
            "features": features_dropped,
            "predictions": predictions_dropped,
            "outcomes": outcomes_dropped,
            "alerts": len(alerts) - len({a["alert_id"] for a in alerts}),
        },
    }


def run_pipeline(stack, spec: Path, events: list[Event], churn: bool, logs: Path) -> dict:
    """The stream through ingest, features, learner and monitor; with `churn`, two
    instances of each but the learner, one of each SIGKILLed mid-stream and restarted."""
    settings = fresh_pipeline(stack, "churn" if churn else "single")
    env = churn_env(settings)
    twice = 2 if churn else 1
    procs = start_all(spec, env, ["learner", *["ingest", "features", "monitor"] * twice])
    feed = PacedProducer(stack.bootstrap, settings.topics, events, rate=500)
    reader = Consumer({"bootstrap.servers": stack.bootstrap, "group.id": "watch"})
    kills = []
    try:
        inputs = {"ingest": settings.topics.events, "features": settings.topics.events_valid}
        for name, p in procs.items():  # every member has joined before the stream starts
            topic = inputs.get(name.split("-")[0])
            if topic is not None:
                wait(lambda p=p, t=topic: any(assignments(p, t)), f"{name} to join", procs)
        feed.start()
        if churn:
            for fraction, service in ((0.2, "ingest"), (0.45, "features"), (0.7, "monitor")):
                feed.wait_for(fraction)
                victim = f"{service}-0"
                procs[victim].kill()
                discard(f"{victim}-killed", procs.pop(victim), logs)
                kills.append((victim, feed.sent))
                time.sleep(1.0)
                procs[f"{victim}-restarted"] = start_service(service, spec, env)
            assert feed.is_alive(), "the stream ended before the last kill"
        feed.finish()
        wait(
            lambda: (
                learner_status(settings, "churn").get(b"labels_learned")
                == str(len(events)).encode()
            ),
            "the learner to learn every label",
            procs,
        )
        wait(
            lambda: monitor_caught_up(settings, "churn", reader, PARTITIONS),
            "the monitor to apply every record",
            procs,
        )
        check_alive(procs)
    finally:
        reader.close()
        codes = stop_all(procs, logs)
    assert codes == dict.fromkeys(codes, 0), codes
    result = outputs(settings, len(events))
    result["kills"] = kills
    return result


def test_scaled_out_services_killed_mid_stream_give_the_single_instance_outputs(stack, tmp_path):
    spec = tmp_path / "churn.yaml"
    spec.write_text(SEA_SPEC)
    n = 6_000
    events = sea_events(n)
    started = time.monotonic()
    single = run_pipeline(stack, spec, events, churn=False, logs=tmp_path / "single")
    print(f"single-instance run: {time.monotonic() - started:.0f} s")
    churned = run_pipeline(stack, spec, events, churn=True, logs=tmp_path / "churn")
    print(f"logs in {tmp_path}")
    missing = n - len({e for _, e in churned["predictions"]})
    print(
        f"records: {n} events + {n} labels; kills (instance, records sent): "
        f"{churned['kills']}; duplicates dropped: {churned['duplicates dropped']}; "
        f"missing predictions: {missing}; alerts: {len(single['alerts'])}; monitor applied "
        f"{churned['monitor outcomes']} outcomes, {churned['monitor feature records']} feature "
        f"records (single run: {single['monitor outcomes']}, "
        f"{single['monitor feature records']}); {time.monotonic() - started:.0f} s"
    )
    print("monitor partitions (next offset, outcomes, feature records):")
    print(f"  churn {churned['monitor partitions']}\n  single {single['monitor partitions']}")
    assert len(churned["kills"]) == 3
    assert missing == 0
    assert churned["duplicates dropped"]["events.valid"] == 0  # ingest writes each once
    for name in ("events.valid", "features", "predictions", "outcomes", "dead letters"):
        assert churned[name] == single[name], f"{name} differ from the single-instance run"
    assert single["monitor outcomes"] == single["monitor feature records"] == n
    # Each monitor input record applied once: fewer is a record skipped (lost), more a
    # re-emitted features record applied again (the monitor drops nothing by its lineage).
    assert (churned["monitor outcomes"], churned["monitor feature records"]) == (n, n), (
        "the monitor did not apply each record once; per partition (next offset, outcomes, "
        f"feature records): {churned['monitor partitions']}"
    )
    assert churned["alerts"] == single["alerts"], "the alerts differ from the single run"
