import gc
import itertools
import json
import time

import msgpack
import psutil
import pytest
from river import metrics

from services.learner.app import build_learner, run_learner
from services.replay.datasets import dataset_events
from services.replay.recorded import write_events
from services.replay.replayer import replay_file
from shared.checkpoint.store import CheckpointStore
from shared.codec import encode
from shared.gc_tuning import HOT_PATH_THRESHOLDS
from shared.kafka import SafeProducer
from shared.messages import Prediction
from shared.redis_store import RedisStore
from shared.schemas import validator
from shared.settings import Settings
from shared.spec import load_spec

from .conftest import ROOT, ThreadedService
from .helpers import read_topic, set_topic_config

SPEC = ROOT / "ops/pipelines/phishing.yaml"


@pytest.mark.tansu_smoke
@pytest.mark.parametrize(
    ("delay", "expected", "model_process"),
    [
        (None, "89.28%", True),
        (0, "89.28%", True),
        (10, "88.56%", True),
        (None, "89.28%", False),
        (10, "88.56%", False),
    ],
)
def test_phishing_through_kafka_scores_like_river(
    settings, tmp_path, delay, expected, model_process
):
    """Inline labels, or labels on the labels topic k events late (River: delay=k); the
    models in a model process of their own (the default) or in the service's thread."""
    settings = settings.model_copy(update={"learner_model_process": model_process})
    stream = tmp_path / "phishing.jsonl"
    write_events(stream, dataset_events("Phishing"))
    labels = {e.event_id: e.label for e in dataset_events("Phishing")}
    learner = ThreadedService(run_learner, settings, load_spec(SPEC)).start()
    try:
        producer = SafeProducer(settings.kafka_bootstrap)
        sent = replay_file(stream, producer, settings.topics, label_delay=delay)
        assert sent.events == 1250
        assert sent.labels == (0 if delay is None else 1250)
        records = read_topic(settings.kafka_bootstrap, settings.topics.predictions, 3750)
        wait_for_status(settings, "labels_learned", "1250")  # trailing labels too
        outcomes = read_topic(settings.kafka_bootstrap, settings.topics.outcomes, 3750)
    finally:
        learner.join()
    for record in outcomes[:30]:
        validator("outcome/v1").validate(record)
    assert {o["label_source"] for o in outcomes} == {"inline" if delay is None else "topic"}
    lags = {o["label_lag_events"] for o in outcomes[300:-300]}
    assert lags == {0 if delay is None else max(delay, 1) - 1}  # events scored in between
    assert all(o["label"] == labels[o["event_id"]] for o in outcomes)
    for record in records[:50]:
        validator("prediction/v1").validate(record)
    predictions = [Prediction.from_wire(r) for r in records]
    champion = [p for p in predictions if p.model == "logreg"]
    assert [p.lineage.offset for p in champion] == list(range(1250))
    assert all(p.lineage.topic == settings.topics.events for p in champion)
    accuracy = metrics.Accuracy()
    for p in champion:
        accuracy.update(labels[p.event_id], p.prediction)
    assert str(accuracy) == f"Accuracy: {expected}"
    status = RedisStore.from_settings(settings).get_hash("headwater:phishing:learner:status")
    assert status["events_seen"] == "1250"
    assert status["labels_learned"] == "1250"
    assert status["pending"] == "0"
    assert f"{float(status['metric:logreg:Accuracy']):.2%}" == expected


@pytest.mark.parametrize("model_process", [True, False])
def test_with_a_model_process_the_learner_keeps_no_copy_of_the_models(
    settings, tmp_path, model_process
):
    """The live models are in the model process and the last checkpoint in Redis; the
    learner itself holds only the spec's fresh ones (a copy would double the memory)."""
    settings = settings.model_copy(update={"learner_model_process": model_process})
    stream = tmp_path / "phishing.jsonl"
    write_events(stream, itertools.islice(dataset_events("Phishing"), 300))
    service = build_learner(settings, load_spec(SPEC))
    thresholds = gc.get_threshold()
    learner = ThreadedService(service.run).start()
    try:
        replay_file(stream, SafeProducer(settings.kafka_bootstrap), settings.topics)
        wait_for_status(settings, "labels_learned", "300")
        assert gc.get_threshold() == HOT_PATH_THRESHOLDS  # while it runs
    finally:
        learner.join()
    assert gc.get_threshold() == thresholds  # given back: it shared this process
    store = RedisStore.from_settings(settings)
    checkpoints = CheckpointStore(store.client, "phishing", "learner", b"headwater-dev-key")
    _, state = checkpoints.load()  # written on the way out
    assert state.core.events_seen == 300
    assert state.core.labels_learned == 300
    assert service.core.events_seen == (0 if model_process else 300)


def wait_for_status(settings: Settings, field: str, value: str, timeout: float = 30) -> None:
    store = RedisStore.from_settings(settings)
    deadline = time.monotonic() + timeout
    while store.get_hash("headwater:phishing:learner:status").get(field) != value:
        assert time.monotonic() < deadline, store.get_hash("headwater:phishing:learner:status")
        time.sleep(0.1)


def test_bad_records_are_dead_lettered_and_the_learner_keeps_going(settings):
    good = {"event_id": "ok-1", "entity": "u", "ts": 1.0, "data": {"x": 1.0}, "label": True}
    bad = [
        (b"\xc1\xc1garbage", "bad_msgpack"),
        (b'{"event_id": "j1", "entity": "u", "ts": 1, "data": {"x": NaN}}', "bad_json"),
        (encode({**good, "event_id": "n1", "data": {"x": float("nan")}}), "non_finite"),
        (encode({**good, "event_id": "w1", "ts": "yesterday"}), "wrong_type"),
        (encode({**good, "event_id": "l1", "label": 0.5}), "bad_label"),
        (encode([1, 2, 3]), "not_an_object"),
        (b"", "empty"),
        (
            b'{"event_id": "i1", "entity": "u", "ts": 1, "data": {"x": 1' + b"0" * 400 + b"}}",
            "bad_value",
        ),
        (encode({**good, "event_id": "s1", "data": {"https": "yes"}}), "model_error"),
        (encode({**good, "event_id": "big", "data": {"s": "x" * 1_500_000}}), "too_large"),
    ]
    # A topic that takes records over the learner's 1 MiB limit (Kafka's default refuses them).
    set_topic_config(
        settings.kafka_bootstrap, settings.topics.events, {"max.message.bytes": "2000000"}
    )
    learner = ThreadedService(run_learner, settings, load_spec(SPEC)).start()
    try:
        producer = SafeProducer(settings.kafka_bootstrap)
        for payload, _ in bad:
            producer.produce(settings.topics.events, payload, b"u")
        producer.produce(settings.topics.events, json.dumps(good).encode(), b"u")  # JSON is fine
        producer.flush()
        letters = read_topic(settings.kafka_bootstrap, settings.topics.events_dlq, len(bad))
        predictions = read_topic(settings.kafka_bootstrap, settings.topics.predictions, 2)
    finally:
        learner.join()
    assert [d["reason"] for d in letters] == [reason for _, reason in bad]
    assert [d["original"] for d in letters[:-1]] == [payload for payload, _ in bad[:-1]]
    assert [d["original_size"] for d in letters] == [len(payload) for payload, _ in bad]
    assert letters[-1]["truncated"] is True
    assert letters[-1]["original"] == bad[-1][0][:65536]
    assert [d["offset"] for d in letters] == list(range(len(bad)))
    for d in letters:
        validator("dlq/v1").validate({**d, "original": None})
        assert d["message"]
    assert {p["event_id"] for p in predictions} == {"ok-1"}
    assert msgpack  # wire format is MessagePack: read_topic decoded it


def test_learner_exits_cleanly_on_sigterm(learner_process):
    # once it is running (a fixed sleep raced a slow start: SIGTERM during imports kills)
    deadline = time.monotonic() + 60
    while "learner active" not in learner_process.log_tail() and time.monotonic() < deadline:
        assert learner_process.alive(), learner_process.log_tail()
        time.sleep(0.1)
    assert learner_process.alive(), learner_process.log_tail()
    assert learner_process.stop() == 0, learner_process.log_tail()
    assert "learner stopped" in learner_process.log_tail()


def test_a_dead_model_process_stops_the_learner_with_a_clear_error(learner_process):
    deadline = time.monotonic() + 60
    while "learner active" not in learner_process.log_tail() and time.monotonic() < deadline:
        assert learner_process.alive(), learner_process.log_tail()
        time.sleep(0.1)
    (model_process,) = psutil.Process(learner_process.pid).children()
    assert "services.learner.model_process" in model_process.cmdline()
    model_process.kill()
    learner_process.proc.wait(30)
    assert learner_process.proc.returncode == 1
    assert "model process died (exit code -9)" in learner_process.log_tail()
    assert "Traceback" not in learner_process.log_tail(200)
