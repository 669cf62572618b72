"""The whole pipeline (ingest, features, learner, monitor as subprocesses) on Apache Kafka
while Redis is lost: killed with SIGKILL and started again from its append-only file, or
replaced by an empty Redis. Every service goes on by itself (without the file, each says
"state lost" and starts again from its checkpoints, put back from the checkpoint topic);
after lineage dedupe each event has one prediction, every label is learned once, and the
final model is the one an uninterrupted run learns."""

from __future__ import annotations

import shutil
import time

import pytest
from confluent_kafka import Consumer
from river import linear_model, preprocessing

from services.features.engine import FeatureEngine
from services.replay.datasets import dataset_events
from shared.kafka import ensure_topics
from shared.models.fingerprint import fingerprint
from shared.models.inputs import model_input
from shared.redis_store import redis_client
from shared.settings import TopicNames
from shared.snapshot import SnapshotStore
from shared.spec import load_spec
from shared.stack import LocalStack
from shared.stack.local_stack import pipeline_topics

from .conftest import BROKER, ROOT, service_env
from .test_kafka_broker import (
    PacedProducer,
    check_each_event_once,
    drained,
    learner_status,
    missing_events,
    start_all,
    stop_all,
    wait,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.timeout(600, method="thread"),
    pytest.mark.skipif(
        BROKER != "kafka", reason="needs Apache Kafka (HEADWATER_TEST_BROKER is not kafka)"
    ),
]

PIPELINE = "phishing-windows"
SPEC = ROOT / "ops/pipelines/phishing-windows.yaml"


@pytest.fixture(scope="module")
def own_stack():
    """A stack of this module's own, whose Redis the tests kill (one partition: the final
    model is then fixed by the stream)."""
    with LocalStack(pipeline_topics(TopicNames(), 1), broker="kafka") as s:
        yield s


def uninterrupted_model(events: list) -> object:
    """The spec's model after learning every event in order, as the learner does."""
    engine = FeatureEngine(load_spec(SPEC).features)
    model = preprocessing.StandardScaler() | linear_model.LogisticRegression()
    for event in events:
        model.learn_one(model_input(engine.process(0, event).features, False), event.label)
    return model


def lose_redis(stack: LocalStack, empty: bool) -> float:
    """SIGKILL Redis, and (`empty`) its append-only file with it; start it again as
    `headwater stack` does. The seconds it was down."""
    assert stack.redis is not None
    stack.redis.kill()
    down = time.monotonic()
    if empty:
        shutil.rmtree(stack.redis_dir)
        stack.redis_dir.mkdir()
    time.sleep(1.0)  # services meet a Redis that is down
    assert stack.revive_redis()
    return time.monotonic() - down


@pytest.mark.parametrize("empty", [False, True], ids=["sigkill-aof", "empty-redis"])
def test_every_service_goes_on_when_redis_is_lost(own_stack, empty, tmp_path):
    stack = own_stack
    run = "empty" if empty else "aof"
    topics = TopicNames(**{f: f"{run}.{name}" for f, name in TopicNames().model_dump().items()})
    ensure_topics(stack.bootstrap, dict.fromkeys(topics.model_dump().values(), 1))
    settings = stack.settings(
        topics=topics,
        consumer_group_prefix=run,
        log_format="text",
        checkpoint_topic=f"{run}.checkpoints",
    )
    redis_client(settings).flushdb()
    events = list(dataset_events("Phishing", entities=20, interval=1.0))
    n = len(events)
    env = {**service_env(settings), "HEADWATER_CHECKPOINT_INTERVAL_S": "1"}
    procs = start_all(SPEC, env, ["ingest", "features", "learner", "monitor"])
    feed = PacedProducer(stack.bootstrap, settings.topics, events, rate=100)
    reader = None
    started = time.monotonic()
    try:
        wait(lambda: learner_status(settings, PIPELINE).get(b"role") == b"active", "learner", procs)
        feed.start()
        feed.wait_for(0.4)
        learned_before = int(learner_status(settings, PIPELINE).get(b"labels_learned", 0))
        down_s = lose_redis(stack, empty)
        lost_at = feed.sent
        feed.finish()
        reader = Consumer({"bootstrap.servers": stack.bootstrap, "group.id": "watch"})
        predictions, dropped = drained(settings, PIPELINE, n, 1, reader, procs)
    finally:
        if reader is not None:
            reader.close()
        status = learner_status(settings, PIPELINE)
        codes = stop_all(procs, tmp_path / "logs")
    logs = {p.stem: p.read_text() for p in (tmp_path / "logs").iterdir()}
    snapshot = SnapshotStore(redis_client(settings), PIPELINE, settings.checkpoint_keys()).load()
    missing = missing_events(events, predictions)
    restarted = [name for name, text in logs.items() if "state lost" in text]
    print(
        f"redis {'replaced by an empty one' if empty else 'killed, AOF kept'} at record "
        f"{lost_at} of {len(feed.sends)} (labels learned {learned_before}), down {down_s:.1f} s; "
        f"events {n}, predictions {len(predictions)}, duplicates dropped {dropped}, missing "
        f"{len(missing)}, labels learned {status.get(b'labels_learned')}; 'state lost' in "
        f"{restarted}; exit codes {codes}; {time.monotonic() - started:.0f} s"
    )
    check_each_event_once(events, predictions, status)
    assert fingerprint(snapshot.models["logreg"].estimator) == fingerprint(
        uninterrupted_model(events)
    )
    # with the append-only file, nothing was lost; without, each started again from its
    # checkpoints, put back from the checkpoint topic
    assert sorted(restarted) == (sorted(procs) if empty else []), restarted
    assert codes == dict.fromkeys(codes, 0), codes
