"""Integration fixtures: one real broker and one private Redis per test session.

The broker is Apache Kafka (the reference) unless HEADWATER_TEST_BROKER=tansu. Each test gets
fresh topic names (and so fresh consumer groups' state) from `topics`.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.launch import start_service
from shared.kafka import ensure_topics
from shared.redis_store import RedisStore
from shared.settings import Settings, TopicNames
from shared.stack import LocalStack
from shared.stack.processes import ManagedProcess

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
_counter = itertools.count()


BROKER = os.environ.get("HEADWATER_TEST_BROKER", "kafka")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Integration tests time out by pytest-timeout's thread method: a hang inside
    librdkafka's C code never sees the signal method's alarm. On a timeout it dumps every
    thread's stack and ends the run."""
    for item in items:
        if "integration" not in item.path.parts:
            continue
        marker = item.get_closest_marker("timeout")
        timeout = marker.args[0] if marker is not None and marker.args else None
        timeout = marker.kwargs.get("timeout", timeout) if marker is not None else None
        item.add_marker(pytest.mark.timeout(timeout=timeout, method="thread"), append=False)


@pytest.fixture(scope="session")
def stack() -> Iterator[LocalStack]:
    with LocalStack(topics={}, broker=BROKER) as s:
        yield s


def _fresh_topics(
    stack: LocalStack, request: pytest.FixtureRequest, direct: bool, partitions: int = 1
) -> TopicNames:
    RedisStore(stack.redis_url).client.flushdb()
    prefix = f"t{next(_counter)}-{request.node.name[:40]}".replace("[", "-").replace("]", "")
    names = {f: f"{prefix}.{f}" for f in TopicNames.model_fields}
    if direct:  # no ingest in between: the learner and features read what producers write
        names["events_valid"], names["labels_valid"] = names["events"], names["labels"]
    topics = TopicNames(**names)
    ensure_topics(stack.bootstrap, dict.fromkeys(topics.model_dump().values(), partitions))
    return topics


@pytest.fixture
def topics(stack: LocalStack, request: pytest.FixtureRequest) -> TopicNames:
    """Fresh topics, one partition each, named after the test — and an empty Redis, since
    checkpoints are keyed by pipeline name, which tests share. Services run without ingest:
    events.valid and labels.valid are the producers' topics themselves."""
    return _fresh_topics(stack, request, direct=True)


@pytest.fixture
def settings(stack: LocalStack, topics: TopicNames) -> Settings:
    return _settings(stack, topics)


@pytest.fixture
def ingest_settings(stack: LocalStack, request: pytest.FixtureRequest) -> Settings:
    """As `settings`, with ingest between the producers' topics and the services."""
    return _settings(stack, _fresh_topics(stack, request, direct=False))


def _settings(stack: LocalStack, topics: TopicNames) -> Settings:
    """The test's own topics and consumer groups, checkpoint topic included."""
    return stack.settings(
        topics=topics,
        consumer_group_prefix=f"g{next(_counter)}",
        log_format="text",
        checkpoint_topic=f"{topics.events}.checkpoints",
    )


def service_env(settings: Settings) -> dict[str, str]:
    """The same settings as HEADWATER_* variables, for a service in a subprocess."""
    env = {
        "HEADWATER_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "HEADWATER_REDIS_URL": settings.redis_url.get_secret_value(),
        "HEADWATER_ALLOW_DEV_CHECKPOINT_KEY": str(settings.allow_dev_checkpoint_key).lower(),
        "HEADWATER_CONSUMER_GROUP_PREFIX": settings.consumer_group_prefix,
        "HEADWATER_CHECKPOINT_TOPIC": settings.checkpoint_topic,
        "HEADWATER_LOG_FORMAT": "text",
    }
    for field, name in settings.topics.model_dump().items():
        env[f"HEADWATER_TOPICS__{field.upper()}"] = name
    return env


def headwater(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run the CLI as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "services.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {}), "COLUMNS": "200"},
        cwd=ROOT,
        check=False,
    )


@pytest.fixture
def learner_process(settings: Settings) -> Iterator[ManagedProcess]:
    proc = start_service("learner", ROOT / "ops/pipelines/phishing.yaml", service_env(settings))
    yield proc
    proc.stop()


class ThreadedService:
    """A service run in-process through its composition root, stopped like SIGTERM would."""

    def __init__(self, target, *args) -> None:
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(target, args), daemon=True)

    def _run(self, target, args) -> None:
        try:
            target(*args, self.stop)
        except BaseException as exc:  # surfaced by join()
            self.error = exc

    def start(self) -> ThreadedService:
        self.thread.start()
        return self

    def join(self, timeout: float = 30) -> None:
        self.stop.set()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "service did not stop within its timeout"
        if self.error is not None:
            raise self.error
