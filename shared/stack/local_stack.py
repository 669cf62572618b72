"""Start a broker (Apache Kafka or Tansu) and a private Redis on free loopback ports.

Serves `headwater stack`, `headwater demo` and the integration-test fixtures alike.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from shared.kafka.admin import ensure_topics
from shared.redis_store import RedisStore
from shared.settings import Settings, TopicNames
from shared.stack.binaries import redis_server_binary
from shared.stack.kafka_broker import KafkaBroker
from shared.stack.processes import ManagedProcess, StackError, free_port, wait_for_port
from shared.stack.tansu_broker import TansuBroker

log = logging.getLogger(__name__)

BrokerKind = Literal["tansu", "kafka"]
BROKERS: tuple[BrokerKind, ...] = ("tansu", "kafka")
BROKER_NAMES: dict[BrokerKind, str] = {"tansu": "Tansu", "kafka": "Apache Kafka"}

__all__ = ["BROKERS", "BrokerKind", "LocalStack", "StackError", "pipeline_topics"]


def pipeline_topics(topics: TopicNames, partitions: int) -> dict[str, int]:
    """Every topic of a pipeline, all with the same partition count (DESIGN §2)."""
    return {name: partitions for name in topics.model_dump().values()}


class LocalStack:
    """Context manager; `bootstrap` and `redis_url` are valid inside the block."""

    def __init__(
        self,
        topics: Mapping[str, int] | None = None,
        *,
        broker: str = "tansu",
        kafka_port: int | None = None,
        redis_port: int | None = None,
        start_timeout: float = 20.0,
        say: Callable[[str], None] = log.info,
    ) -> None:
        if broker not in BROKERS:
            raise StackError(f"unknown broker {broker!r}: choose one of {', '.join(BROKERS)}")
        self.broker_kind: BrokerKind = broker
        self.broker: KafkaBroker | TansuBroker = (
            KafkaBroker(kafka_port, say=say) if broker == "kafka" else TansuBroker(kafka_port)
        )
        self.redis_port = redis_port or free_port()
        self.topics = dict(topics if topics is not None else pipeline_topics(TopicNames(), 1))
        self.start_timeout = start_timeout
        self.redis: ManagedProcess | None = None
        self.redis_dir = Path(tempfile.mkdtemp(prefix="headwater-redis-"))  # its append-only file

    @property
    def broker_name(self) -> str:
        return BROKER_NAMES[self.broker_kind]

    @property
    def kafka_port(self) -> int:
        return self.broker.port

    @property
    def bootstrap(self) -> str:
        return self.broker.bootstrap

    @property
    def broker_pid(self) -> int | None:
        """The broker's process (None before it starts): benchmarks read its CPU."""
        return self.broker.process.pid if self.broker.process is not None else None

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    def env(self) -> dict[str, str]:
        """Environment that points a Headwater service at this stack (a local one: the
        development checkpoint key is allowed)."""
        return {
            "HEADWATER_KAFKA_BOOTSTRAP": self.bootstrap,
            "HEADWATER_REDIS_URL": self.redis_url,
            "HEADWATER_ALLOW_DEV_CHECKPOINT_KEY": "true",
        }

    def settings(self, **overrides: Any) -> Settings:
        """Settings of a service run in this process against this stack."""
        return Settings(
            kafka_bootstrap=self.bootstrap,
            redis_url=self.redis_url,
            allow_dev_checkpoint_key=True,
            **overrides,
        )

    def processes(self) -> list[ManagedProcess]:
        return [p for p in (self.broker.process, self.redis) if p is not None]

    def start(self) -> LocalStack:
        try:
            # A JVM's start-up is slower than Tansu's: Kafka gets at least a minute.
            kafka = self.broker_kind == "kafka"
            self.broker.start(max(self.start_timeout, 60.0) if kafka else self.start_timeout)
            self._start_redis()
            if self.topics:
                ensure_topics(self.bootstrap, self.topics)
        except BaseException:
            self.stop()
            raise
        return self

    def _start_redis(self) -> None:
        """With an append-only file in its directory, written to disk every second: a
        Redis killed and started again comes back with its data (all but the last second)."""
        self.redis = ManagedProcess(
            "redis",
            [
                str(redis_server_binary()),
                "--port",
                str(self.redis_port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
                "--dir",
                str(self.redis_dir),
                "--daemonize",
                "no",
            ],
        )
        if not wait_for_port(self.redis_port, self.start_timeout, self.redis.proc):
            raise StackError(f"Redis did not start on {self.redis_url}:\n{self.redis.log_tail()}")
        RedisStore(self.redis_url).wait_ready(self.start_timeout)

    def revive_redis(self) -> bool:
        """Start Redis again, on its port and from its append-only file, if it died; True
        when it had to be. Services ride out the gap (their Redis calls retry)."""
        if self.redis is None or self.redis.alive():
            return False
        log.warning(
            "Redis exited; starting it again", extra={"fields": {"tail": self.redis.log_tail(5)}}
        )
        self.redis.cleanup()
        self._start_redis()
        return True

    def stop(self) -> None:
        if self.redis is not None:
            self.redis.stop()
            self.redis.cleanup()
            self.redis = None
        self.broker.stop()
        shutil.rmtree(self.redis_dir, ignore_errors=True)

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
