"""Consumer lag as the API and Prometheus show it, against the broker's own end offsets: on
Apache Kafka the high watermark is the log's end, so both must equal end offset - checkpoint
offset exactly (Tansu's trails the log; there a lag below zero is shown as 0)."""

from __future__ import annotations

import sys

import httpx
import pytest
from confluent_kafka import Consumer

from services.api.readers import parse_offsets
from services.launch import start_service
from shared.checkpoint.store import CheckpointStore
from shared.codec import encode
from shared.kafka import SafeProducer
from shared.redis_store import RedisStore
from shared.stack.processes import ManagedProcess, free_port, wait_for_port

from .conftest import BROKER, ROOT, _fresh_topics, _settings, service_env
from .helpers import end_offset, wait_until
from .test_service_metrics import scrape, series

pytestmark = pytest.mark.skipif(BROKER != "kafka", reason="exact only where the watermark is")

SPEC = ROOT / "ops/pipelines/phishing.yaml"  # pipeline "phishing", model logreg first
PARTITIONS, N = 2, 400


def event(i: int) -> bytes:
    data = {"long_url": 1.0, "is_popular": 0.0, "age_of_domain": 1.0}
    return encode({"event_id": f"e{i}", "entity": f"u{i % 7}", "ts": 1000.0 + i, "data": data})


@pytest.mark.slow
def test_api_and_prometheus_lag_are_end_offset_minus_checkpoint_offset(stack, request):
    """N events on 2 partitions and a later label on each: the learner applies what its
    ordered merge releases and checkpoints it, and holds the rest for a minute
    (HEADWATER_MERGE_IDLE_MS). Per input partition, the learner's consumer_lag gauge and the
    API's lag equal the partition's end offset minus the checkpointed offset, not all 0."""
    settings = _settings(stack, _fresh_topics(stack, request, direct=True, partitions=PARTITIONS))
    topics = settings.topics
    metrics_port, api_port = free_port(), free_port()
    env = {
        **service_env(settings),
        "HEADWATER_MERGE_IDLE_MS": "60000",
        "HEADWATER_CHECKPOINT_INTERVAL_S": "0.5",
    }
    learner = start_service("learner", SPEC, {**env, "HEADWATER_METRICS_PORT": str(metrics_port)})
    api = ManagedProcess(
        "api", [sys.executable, "-m", "services.cli.main", "api", "--port", str(api_port)], env=env
    )
    client = RedisStore.from_settings(settings).client
    store = CheckpointStore(client, "phishing", "learner", b"-")
    reader = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": "lag-test"})
    inputs = [(t, p) for t in (topics.events, topics.labels) for p in range(PARTITIONS)]

    def ends() -> dict[tuple[str, int], int]:
        return {(t, p): end_offset(reader, t, p) for t, p in inputs}

    def checkpointed() -> dict[tuple[str, int], int]:
        versions = store.versions()
        offsets = versions[0].meta.get("offsets", {}) if versions else {}
        return {(t, p): o for t, p, o in parse_offsets(offsets)}

    def behind() -> dict[tuple[str, int], int]:
        """End offset - checkpoint offset (0 for a partition with no record applied yet)."""
        at = checkpointed()
        return {key: end - at.get(key, 0) for key, end in ends().items()}

    try:
        producer = SafeProducer(settings.kafka_bootstrap)
        for i in range(N):
            producer.produce(topics.events, event(i), f"u{i % 7}".encode())
        # A label per partition, later than every event. The merge lets through what it can
        # and holds the rest: the last event of a partition waits for the other (dry) one,
        # the labels wait for events to come; a minute each (HEADWATER_MERGE_IDLE_MS).
        label = encode({"event_id": "none", "entity": "x", "ts": 5000.0, "label": True})
        for p in range(PARTITIONS):
            producer.produce(topics.labels, label, b"x", partition=p)
        producer.close()
        wait_until(
            lambda: lag_gauges(metrics_port) == behind() and sum(behind().values()) > 0,
            "the learner's lag gauges to settle on the checkpointed positions",
            learner,
        )
        assert wait_for_port(api_port, 30), api.log_tail()
        gauges = lag_gauges(metrics_port)
        url = f"http://127.0.0.1:{api_port}/pipelines/phishing/models/logreg"
        # The API asks Kafka in the background from the first request about a partition on,
        # and answers with what it heard (null before the first answer)
        answers: list[httpx.Response] = []

        def heard() -> bool:
            answers.append(httpx.get(url))
            inputs = answers[-1].json().get("inputs") or [{"high_watermark": None}]
            return all(i["high_watermark"] is not None for i in inputs)

        wait_until(heard, "the API's watermarks", api, timeout=30)
        answer = answers[-1]
        end, at, expected = ends(), checkpointed(), behind()
    finally:
        reader.close()
        codes = [api.stop(), learner.stop()]
    assert codes == [0, 0], api.log_tail() + learner.log_tail()
    assert gauges == expected, "the held records moved while the test read"
    assert answer.status_code == 200, answer.text
    shown = {(i["topic"], i["partition"]): i for i in answer.json()["inputs"]}
    assert set(shown) == set(at)  # the partitions with a checkpointed position
    assert {key: i["lag"] for key, i in shown.items()} == {key: expected[key] for key in at}
    assert {key: i["high_watermark"] for key, i in shown.items()} == {key: end[key] for key in at}
    assert {key: i["next_offset"] for key, i in shown.items()} == at
    assert all(0 <= i["high_watermark_age_seconds"] <= 5 for i in shown.values())
    assert any(expected[key] for key in at), expected  # a lag that is not zero
    print(f"end - checkpoint per input partition: {expected}; the API and the gauges agree")


def lag_gauges(port: int) -> dict[tuple[str, int], int]:
    try:
        samples = scrape(port)
    except OSError:
        return {}
    lags = series(samples, "headwater_learner_consumer_lag")
    return {(dict(k)["topic"], int(dict(k)["partition"])): int(v) for k, v in lags.items()}
