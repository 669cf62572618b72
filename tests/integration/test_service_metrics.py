"""Every service's Prometheus exporter, scraped as Prometheus would: the series of the
metrics contract (shared/metrics.py, README "Metrics") exist, with values that match a small
stream sent through the service. The alert rules and the dashboard rely on these names."""

from __future__ import annotations

import itertools
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from services.features.app import run_features
from services.ingest.app import run_ingest
from services.launch import start_service
from services.learner.app import run_learner
from services.monitor.engine import DriftEngine
from services.replay.datasets import dataset_events
from services.replay.recorded import write_events
from services.replay.replayer import replay_file
from shared.codec import encode
from shared.kafka import SafeProducer
from shared.messages import Event, Lineage, Outcome
from shared.settings import Settings
from shared.spec import load_spec, parse_spec
from shared.stack.processes import free_port

from .conftest import ROOT, ThreadedService, service_env

pytestmark = pytest.mark.integration

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
T = 1_795_255_200.0


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def series(samples: Samples, name: str) -> dict[frozenset[tuple[str, str]], float]:
    """Every label set of one sample name, with its value."""
    return {labels: v for (n, labels), v in samples.items() if n == name}


def eventually(
    port: int, done: Callable[[Samples], bool], what: str, proc: Any = None, timeout: float = 30
) -> Samples:
    """Scrape until `done` holds; fail with what was last scraped."""
    deadline = time.monotonic() + timeout
    last: Samples = {}
    while True:
        assert proc is None or proc.alive(), f"service exited:\n{proc.log_tail(40)}"
        try:
            last = scrape(port)
        except OSError:  # the exporter is not up yet
            last = {}
        if last and done(last):
            return last
        assert time.monotonic() < deadline, f"timed out waiting for {what}; scraped:\n" + "\n".join(
            f"{n}{dict(labels)} {v}" for (n, labels), v in sorted(last.items(), key=str)
        )
        time.sleep(0.2)


def caught_up(
    service: str, records: Callable[[Samples], bool], inputs: set[str]
) -> Callable[[Samples], bool]:
    """The records counted, a lag of 0 for every input's partition, a checkpoint written."""
    p = f"headwater_{service}_"

    def done(s: Samples) -> bool:
        lags = series(s, p + "consumer_lag")
        return (
            records(s)
            and {dict(labels)["topic"] for labels in lags} == inputs
            and all(v == 0 for v in lags.values())
            and (value(s, p + "checkpoint_bytes") or 0) > 0
        )

    return done


def assert_common(s: Samples, service: str, inputs: set[str]) -> None:
    """The contract's series every service has, after a stream and a checkpoint."""
    p = f"headwater_{service}_"
    assert (value(s, p + "batch_processing_seconds_count") or 0) > 0
    lags = series(s, p + "consumer_lag")
    assert {dict(labels)["topic"] for labels in lags} == inputs
    assert all(dict(labels)["partition"] == "0" for labels in lags)
    assert (value(s, p + "checkpoint_seconds_count") or 0) >= 1
    assert (value(s, p + "checkpoint_bytes") or 0) > 0
    age = value(s, p + "checkpoint_age_seconds")
    assert age is not None
    assert 0 <= age < 60


def records_by_outcome(s: Samples, service: str) -> dict[str, float]:
    return {
        dict(labels)["outcome"]: v
        for labels, v in series(s, f"headwater_{service}_records_total").items()
    }


def out_by_topic(s: Samples, service: str) -> dict[str, float]:
    return {
        dict(labels)["topic"]: v
        for labels, v in series(s, f"headwater_{service}_records_out_total").items()
    }


def dead_by_reason(s: Samples, service: str) -> dict[str, float]:
    return {
        dict(labels)["reason"]: v
        for labels, v in series(s, f"headwater_{service}_dead_letters_total").items()
    }


def with_metrics(settings: Settings) -> tuple[Settings, int]:
    port = free_port()
    return settings.model_copy(update={"metrics_port": port, "checkpoint_interval_s": 0.5}), port


def test_ingest_exports_the_contract(ingest_settings):
    settings, port = with_metrics(ingest_settings)
    topics = settings.topics
    producer = SafeProducer(settings.kafka_bootstrap)
    for i in range(5):
        event = {"event_id": f"e{i}", "entity": "u1", "ts": T + i, "data": {"x": 1.0}}
        producer.produce(topics.events, encode(event))
    producer.produce(topics.events, encode({"event_id": "e0", "entity": "u1", "ts": T, "data": {}}))
    producer.produce(topics.events, b"\xc1garbage")
    producer.produce(
        topics.labels, encode({"event_id": "e0", "entity": "u1", "ts": T, "label": True})
    )
    producer.close()
    service = ThreadedService(run_ingest, settings, parse_spec(INGEST_SPEC)).start()
    try:
        s = eventually(
            port,
            caught_up(
                "ingest",
                lambda s: records_by_outcome(s, "ingest").get("in") == 8,
                {topics.events, topics.labels},
            ),
            "ingest to catch up",
        )
    finally:
        service.join()
    assert records_by_outcome(s, "ingest") == {
        "in": 8,
        "valid": 6,
        "deduplicated": 1,
        "dead_lettered": 1,
    }
    assert out_by_topic(s, "ingest") == {
        topics.events_valid: 5,
        topics.labels_valid: 1,
        topics.events_dlq: 1,
    }
    assert dead_by_reason(s, "ingest") == {"bad_msgpack": 1}
    assert_common(s, "ingest", {topics.events, topics.labels})


INGEST_SPEC = """
name: ingest
task: binary
models: [{name: lr, river: river.linear_model.LogisticRegression}]
"""

FEATURES_SPEC = """
name: windows
task: binary
models: [{name: lr, river: river.linear_model.LogisticRegression}]
features:
  windows: [{kind: tumbling, size: 30s}]
  aggregations: [{field: x, ops: [count, mean]}]
"""


def test_features_exports_the_contract(settings):
    settings, port = with_metrics(settings)
    topics = settings.topics
    producer = SafeProducer(settings.kafka_bootstrap)
    for i in range(200):
        event = Event(f"e{i}", f"u{i % 7}", T + i, {"x": float(i)})
        producer.produce(topics.events_valid, encode(event.to_wire()), b"u")
    producer.produce(topics.events_valid, b"\xc1", b"u")
    producer.close()
    service = ThreadedService(run_features, settings, parse_spec(FEATURES_SPEC)).start()
    try:
        s = eventually(
            port,
            caught_up(
                "features",
                lambda s: sum(records_by_outcome(s, "features").values()) == 201,
                {topics.events_valid},
            ),
            "features to catch up",
        )
    finally:
        service.join()
    assert records_by_outcome(s, "features") == {"applied": 200, "dead_lettered": 1}
    assert out_by_topic(s, "features") == {topics.features: 200, topics.events_dlq: 1}
    assert dead_by_reason(s, "features") == {"bad_msgpack": 1}
    assert_common(s, "features", {topics.events_valid})


def test_learner_exports_the_contract_and_its_latency_and_label_lag(settings, tmp_path):
    """300 Phishing events, each label 5 events late on the labels topic, and a bad record."""
    settings, port = with_metrics(settings)
    topics = settings.topics
    stream = tmp_path / "phishing.jsonl"
    write_events(stream, itertools.islice(dataset_events("Phishing"), 300))
    spec = load_spec(ROOT / "ops/pipelines/phishing.yaml")
    models = [m.name for m in spec.models]
    learner = ThreadedService(run_learner, settings, spec).start()
    try:
        producer = SafeProducer(settings.kafka_bootstrap)
        sent = replay_file(stream, producer, topics, label_delay=5)
        assert (sent.events, sent.labels) == (300, 300)
        producer.produce(topics.events_valid, b"\xc1", b"u")
        producer.close()

        def counted(s: Samples) -> bool:
            return sum(records_by_outcome(s, "learner").values()) == 601

        s = eventually(
            port,
            caught_up("learner", counted, {topics.events_valid, topics.labels_valid}),
            "the learner to catch up",
            timeout=60,
        )
    finally:
        learner.join()
    p = "headwater_learner_"
    assert records_by_outcome(s, "learner") == {
        "scored": 300,
        "label_joined": 300,
        "dead_lettered": 1,
    }
    assert out_by_topic(s, "learner") == {
        topics.predictions: 300 * len(models),
        topics.outcomes: 300 * len(models),
        topics.events_dlq: 1,
    }
    assert dead_by_reason(s, "learner") == {"bad_msgpack": 1}
    assert_common(s, "learner", {topics.events_valid, topics.labels_valid})
    for model in models:
        assert value(s, p + "predictions_total", model=model) == 300
    assert value(s, p + "labels_learned_total") == 300
    latency = value(s, p + "event_to_prediction_seconds_count") or 0
    assert latency > 0
    assert 0 < (value(s, p + "event_to_prediction_seconds_sum") or 0) / latency < 60
    # the label of event j comes just before event j + 5: 4 events scored in between; the
    # last 5 come after the last event: 4, 3, 2, 1, 0
    assert value(s, p + "label_lag_events_count") == 300
    assert value(s, p + "label_lag_events_sum") == 295 * 4 + 4 + 3 + 2 + 1
    assert value(s, p + "label_lag_events_bucket", le="0.0") == 1
    assert value(s, p + "label_lag_events_bucket", le="1.0") == 2
    assert value(s, p + "label_lag_events_bucket", le="5.0") == 300
    assert value(s, p + "pending_labels") is not None
    assert value(s, p + "model_metric", model="logreg", metric="Accuracy") is not None


MONITOR_SPEC = """
name: drift
task: binary
models: [{name: lr, river: river.linear_model.LogisticRegression}]
drift:
  covariate: {enabled: false}
"""
RIGHT, WRONG = 1500, 500  # a model right every time, then wrong every time: concept drift


def outcome(i: int, pipeline: str = "drift") -> Outcome:
    label = i % 2 == 0
    prediction = label if i < RIGHT else not label
    return Outcome(
        f"e{i}",
        "u",
        T + i,
        pipeline,
        "lr",
        1,
        "binary",
        prediction,
        None,
        label,
        "inline",
        0,
        Lineage("features", 0, i),
    )


def test_monitor_serves_the_contract_on_its_port_and_counts_drift_alerts(settings, tmp_path):
    """In a process of its own, as deployed: HEADWATER_METRICS_PORT starts its exporter."""
    spec_file = tmp_path / "drift.yaml"
    spec_file.write_text(MONITOR_SPEC)
    topics = settings.topics
    outcomes = [outcome(i) for i in range(RIGHT + WRONG)]
    engine = DriftEngine("drift", "binary", parse_spec(MONITOR_SPEC).drift)
    expected = [
        a for i, o in enumerate(outcomes) for a in engine.observe_outcome(o, Lineage("t", 0, i))
    ]
    assert [(a.kind, a.action) for a in expected][:1] == [("concept", "none")]
    producer = SafeProducer(settings.kafka_bootstrap)
    for o in outcomes:
        producer.produce(topics.outcomes, encode(o.to_wire()), b"u")
    producer.produce(topics.outcomes, b"\xc1", b"u")
    producer.produce(topics.outcomes, encode(outcome(0, "another").to_wire()), b"u")
    producer.close()
    port = free_port()
    env = {
        **service_env(settings),
        "HEADWATER_METRICS_PORT": str(port),
        "HEADWATER_CHECKPOINT_INTERVAL_S": "0.5",
    }
    proc = start_service("monitor", spec_file, env)
    try:

        def counted(s: Samples) -> bool:
            return sum(records_by_outcome(s, "monitor").values()) == len(outcomes) + 2

        s = eventually(
            port,
            caught_up("monitor", counted, {topics.outcomes}),
            "the monitor to catch up",
            proc,
            60,
        )
    finally:
        code = proc.stop()
    assert code == 0, proc.log_tail(40)
    assert records_by_outcome(s, "monitor") == {
        "applied": len(outcomes),
        "skipped_replayed": 0,  # every outcome exported from the start
        "dead_lettered": 1,
        "other_pipeline": 1,
        "duplicate": 0,  # no features input here
    }
    assert out_by_topic(s, "monitor") == {topics.drift_alerts: len(expected), topics.events_dlq: 1}
    assert dead_by_reason(s, "monitor") == {"bad_msgpack": 1}
    alerts = series(s, "headwater_monitor_drift_alerts_total")
    by_kind = {(dict(k)["kind"], dict(k)["action"]): v for k, v in alerts.items()}
    assert sum(by_kind.values()) == len(expected)
    assert by_kind[("concept", "none")] >= 1
    assert_common(s, "monitor", {topics.outcomes})
