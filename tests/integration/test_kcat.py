"""The README's kcat one-liner, run as written with the kcat Debian ships (librdkafka 2.0.2).

The README shows it as the kcat way to send "the same event" as its Python client: JSON
instead of MessagePack, keyed by entity, which ingest accepts and the learner answers.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, TopicPartition

from services.launch import start_service
from shared.codec import CodecError, decode
from shared.kafka import ensure_topics
from shared.redis_store import RedisStore
from shared.settings import TopicNames
from shared.stack import LocalStack

from .conftest import BROKER, ROOT

README = (ROOT / "README.md").read_text()


def readme_kcat_line() -> str:
    """The command exactly as the README prints it, so the two cannot drift apart."""
    match = re.search(r"`(echo '[^`]*' \| kcat -P [^`]*)`", README)
    assert match, "the README lost its kcat example"
    return match.group(1)


def debian_kcat() -> str:
    """The distribution's kcat, which ops/install-test-tools.sh installs (`make test` runs it)."""
    kcat = shutil.which("kcat")
    if kcat is None:
        pytest.skip("kcat is not installed: ops/install-test-tools.sh installs Debian's")
    return kcat


def run_kcat_line(
    bootstrap: str, extra_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The README's line in a shell, with the variable `headwater stack` tells users to export."""
    return subprocess.run(
        ["bash", "-c", readme_kcat_line()],
        env={**os.environ, "HEADWATER_KAFKA_BOOTSTRAP": bootstrap, **(extra_env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def read_messages(
    bootstrap: str, topic: str, done: Callable[[list[Message]], bool], timeout: float = 60
) -> list[Message]:
    """Raw messages (key, headers, bytes) from the start until `done` holds."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"kcat-{uuid.uuid4().hex[:6]}",
            "enable.auto.commit": False,
        }
    )
    consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    out: list[Message] = []
    deadline = time.monotonic() + timeout
    try:
        while not done(out):
            assert time.monotonic() < deadline, f"{len(out)} records on {topic}, none matched"
            for msg in consumer.consume(500, 0.2):
                assert msg.error() is None, msg.error()
                out.append(msg)
    finally:
        consumer.close()
    return out


def with_id(messages: list[Message], event_id: str) -> list[tuple[Message, Any]]:
    """The messages about `event_id`, decoded; what no Headwater reader could decode is not."""
    out = []
    for m in messages:
        try:
            value = decode(m.value())
        except CodecError:
            continue
        if isinstance(value, dict) and value.get("event_id") == event_id:
            out.append((m, value))
    return out


@pytest.mark.skipif(
    BROKER != "kafka", reason="Debian's kcat cannot reach Tansu (the test below shows why)"
)
def test_readme_kcat_event_is_normalised_by_ingest_and_predicted(stack):
    """Default topic names, as a user of `headwater stack` has them; Apache Kafka."""
    debian_kcat()
    topics = TopicNames()
    ensure_topics(stack.bootstrap, dict.fromkeys(topics.model_dump().values(), 1))
    RedisStore(stack.redis_url).client.flushdb()
    service_env = {**stack.env(), "HEADWATER_CONSUMER_GROUP_PREFIX": f"kcat{uuid.uuid4().hex[:6]}"}
    spec = ROOT / "ops/pipelines/phishing.yaml"
    ingest = start_service("ingest", spec, service_env)
    learner = start_service("learner", spec, service_env)
    try:
        result = run_kcat_line(stack.bootstrap)
        assert result.returncode == 0, result.stderr
        assert result.stderr == "", result.stderr
        sent = read_messages(stack.bootstrap, topics.events, lambda out: bool(with_id(out, "e2")))
        [(raw, _)] = with_id(sent, "e2")
        assert raw.value().startswith(b"{")  # kcat sent JSON
        assert raw.key() == b"site-42"

        valid = read_messages(
            stack.bootstrap, topics.events_valid, lambda out: bool(with_id(out, "e2"))
        )
        [(msg, event)] = with_id(valid, "e2")
        assert not msg.value().startswith(b"{")  # ingest writes MessagePack
        assert event == {
            "event_id": "e2",
            "entity": "site-42",
            "ts": 1704067200.0,
            "data": {"https": 1.0},
        }
        assert type(event["ts"]) is float  # the integer time normalised
        assert msg.key() == b"site-42"
        headers = dict(msg.headers() or [])
        assert headers["headwater-lineage"] == f"{topics.events}:0:{raw.offset()}".encode()

        predictions = read_messages(
            stack.bootstrap,
            topics.predictions,
            lambda out: len(with_id(out, "e2")) >= 3,
            timeout=90,
        )
        models = {p["model"] for _, p in with_id(predictions, "e2")}
        assert models == {"logreg", "hoeffding-tree", "vw-logistic"}
    finally:
        assert learner.stop() == 0, learner.log_tail()
        assert ingest.stop() == 0, ingest.log_tail()


def newer_librdkafka(tmp_path: Path) -> Path | None:
    """A directory whose librdkafka.so.1 is the one confluent-kafka's wheel bundles."""
    import confluent_kafka

    libs = Path(confluent_kafka.__file__).resolve().parent.parent / "confluent_kafka.libs"
    found = sorted(libs.glob("librdkafka*.so*"))
    if not found:
        return None
    (tmp_path / "librdkafka.so.1").symlink_to(found[0])
    return tmp_path


def test_debian_kcat_cannot_reach_tansu_and_a_newer_librdkafka_can(tmp_path):
    """What the README says about Tansu: Debian 12's librdkafka 2.0.2 misreads the tagged
    fields of Tansu's ApiVersions reply, and no kcat option avoids that reply; the same kcat
    on librdkafka 2.2 or later works. If this fails, Tansu or Debian changed: update the
    README's kcat note."""
    version = subprocess.run([debian_kcat(), "-V"], capture_output=True, text=True).stdout
    if "librdkafka 2.0." not in version:
        pytest.skip(f"this kcat is not Debian 12's (librdkafka 2.0.x): {version}")
    with LocalStack(topics={"events": 1}, broker="tansu") as tansu:
        result = run_kcat_line(tansu.bootstrap)
        assert result.returncode != 0
        assert "ApiVersionRequest failed" in result.stderr
        assert "Read underflow" in result.stderr
        libdir = newer_librdkafka(tmp_path)
        if libdir is None:
            pytest.skip("confluent-kafka's wheel bundles no librdkafka here")
        newer = run_kcat_line(tansu.bootstrap, {"LD_LIBRARY_PATH": str(libdir)})
        assert newer.returncode == 0, newer.stderr
        sent = read_messages(tansu.bootstrap, "events", lambda out: bool(with_id(out, "e2")))
        assert [m.key() for m, _ in with_id(sent, "e2")] == [b"site-42"]
